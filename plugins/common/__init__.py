"""Helpers shared by built-in plugins (not a plugin: no entry point). Only small, stable pieces belong here;
plugins still talk to each other through bus messages, never through each other's modules.
"""
