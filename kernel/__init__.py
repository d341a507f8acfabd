"""kubeedge: KubeEdge's cloud/edge system as a plugin-based microkernel on trio.

The public API is ``__all__``; everything else is private. A plugin needs ``from kubeedge import hookimpl``
and, for a module, :class:`BaseModule` (or any object with ``name``, ``group`` and ``run``).
"""

from .bus import Bus, BusError, SyncTimeout, UnknownGroup, UnknownModule
from .hookspecs import hookimpl
from .kernel import Kernel, KernelError, ModuleFailed
from .message import Message, MessageError
from .module import BaseModule, Context, Module
from .profile import Profile, ProfileError, load_profile
from .registry import PluginError, Plugins

__version__ = "0.1.0"

__all__ = [
    "BaseModule",
    "Bus",
    "BusError",
    "Context",
    "Kernel",
    "KernelError",
    "Message",
    "MessageError",
    "Module",
    "ModuleFailed",
    "PluginError",
    "Plugins",
    "Profile",
    "ProfileError",
    "SyncTimeout",
    "UnknownGroup",
    "UnknownModule",
    "__version__",
    "hookimpl",
    "load_profile",
]
