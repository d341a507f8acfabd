"""edgestream's stats: the /proc parsers, the Summary and the resource metrics built from fixed samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubeedge.plugins.edged.runtime import ContainerUsage
from kubeedge.plugins.edgestream.stats import (
    ContainerSample,
    HostSample,
    Interface,
    PidStat,
    PodSample,
    Snapshot,
    StatsCollector,
    _rate,
    default_interface,
    fs_stats,
    parse_meminfo,
    parse_net_dev,
    parse_pid_stat,
    parse_proc_stat,
    read_host,
    resource_metrics,
    rfc3339,
    summary,
)

PROC_STAT = """\
cpu  495733 248 171196 822730 3361 10 5884 682 0 0
cpu0 231323 5 82467 431659 891 0 2279 331 0 0
intr 1234 0 0
ctxt 99
btime 1795309757
processes 14000
"""

MEMINFO = """\
MemTotal:       24684084 kB
MemFree:        23976648 kB
MemAvailable:   24206008 kB
Inactive(file):   100000 kB
AnonPages:         80000 kB
HugePages_Total:       0
garbage line
"""

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes  packets errs drop fifo frame compressed multicast|bytes  packets errs drop fifo colls carrier compressed
  lo: 7563444596 9391267  0  0  0  0  0  0 7563444596 9391267  0  0  0  0  0  0
  eth0: 1312802379  40697  3  0  0  0  0  0  2597883  21468  4  0  0  0  0  0
vethab12: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0
  bad0: 1 2 3
"""

ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wlan0\t00000000\t010200C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
down0\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0
"""

PID_STAT = (
    "14205 (python (a) b) S 14150 14150 13427 0 -1 4194304 99 0 7 0 250 50 0 0 20 0 1 0 760242 3133440 389 "
    "18446744073709551615 93974077861888 0"
)


def test_proc_stat_busy_time_and_boot_time() -> None:
    busy, boot = parse_proc_stat(PROC_STAT, ticks_per_second=100)
    # user + nice + system + irq + softirq + steal, not idle nor iowait
    assert busy == (495733 + 248 + 171196 + 10 + 5884 + 682) * 10_000_000
    assert boot == 1795309757
    assert parse_proc_stat("cpu  1 2 3\n") == ((1 + 2 + 3) * 10_000_000, None)  # an old kernel's short line
    assert parse_proc_stat("btime 5\n") == (None, 5)
    assert parse_proc_stat("cpu x y z w\nbtime soon\n") == (None, None)
    assert parse_proc_stat("") == (None, None)


def test_meminfo_values_in_bytes() -> None:
    info = parse_meminfo(MEMINFO)
    assert info["MemTotal"] == 24684084 * 1024
    assert info["Inactive(file)"] == 100000 * 1024
    assert info["HugePages_Total"] == 0  # no unit: as is
    assert "garbage line" not in info and len(info) == 6
    vmstat = parse_meminfo("pgfault 231546108\npgmajfault 10500\nnr_free_pages x\n")
    assert vmstat == {"pgfault": 231546108, "pgmajfault": 10500}


def test_net_dev_and_default_route() -> None:
    interfaces = parse_net_dev(NET_DEV)
    assert set(interfaces) == {"lo", "eth0", "vethab12"}  # the header and the short line are skipped
    assert interfaces["eth0"] == Interface("eth0", 1312802379, 3, 2597883, 4)
    assert default_interface(ROUTE) == "eth0"  # the lowest metric among the default routes that are up
    assert default_interface(ROUTE.splitlines()[0]) is None
    assert default_interface("") is None


def test_pid_stat_counts_fields_after_the_name() -> None:
    stat = parse_pid_stat(PID_STAT)
    assert stat == PidStat(
        minor_faults=99, major_faults=7, user_ticks=250, system_ticks=50, start_ticks=760242, rss_pages=389
    )
    assert parse_pid_stat("1 (init) S 0 1") is None
    assert parse_pid_stat("no parentheses at all") is None


def test_read_host_tolerates_missing_files(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "stat").write_text(PROC_STAT)
    sample = read_host(tmp_path, proc=proc)
    assert sample.cpu_ns is not None and sample.boot_time == 1795309757
    assert sample.own is None and sample.meminfo == {} and sample.interfaces == {}
    assert sample.default_interface is None
    assert sample.fs is not None and sample.fs.capacity_bytes > 0
    body = summary(Snapshot("n1", sample))
    node = body["node"]
    assert set(node) == {"nodeName", "systemContainers", "startTime", "cpu", "fs"}  # nothing invented
    assert node["systemContainers"] == [{"name": "kubelet"}]
    assert "usageNanoCores" not in node["cpu"]
    assert body["pods"] == []

    (proc / "meminfo").write_text(MEMINFO)
    (proc / "self" / "stat").write_text(PID_STAT)
    (proc / "net").mkdir()
    (proc / "net" / "dev").write_text(NET_DEV)
    (proc / "net" / "route").write_text(ROUTE)
    sample = read_host(None, proc=proc)
    assert sample.fs is None and sample.default_interface == "eth0" and sample.own is not None
    ticks = os.sysconf("SC_CLK_TCK")
    assert sample.own_cpu_ns == 300 * 1_000_000_000 // ticks
    assert sample.own_start == 1795309757 + 760242 / ticks
    memory = summary(Snapshot("n1", sample))["node"]["memory"]
    usage = (24684084 - 23976648) * 1024
    assert memory["usageBytes"] == usage
    assert memory["workingSetBytes"] == usage - 100000 * 1024
    assert memory["availableBytes"] == 24684084 * 1024 - memory["workingSetBytes"]
    assert memory["rssBytes"] == 80000 * 1024 and "pageFaults" not in memory  # no vmstat file
    lean = summary(Snapshot("n1", sample), only_cpu_and_memory=True)["node"]
    assert "network" not in lean and "memory" in lean and "fs" not in lean

    assert fs_stats(tmp_path / "missing") is None


def _host() -> HostSample:
    return HostSample(
        time=1_700_000_010.0,
        cpu_ns=5_000_000_000,
        boot_time=1_700_000_000,
        meminfo=parse_meminfo(MEMINFO),
        interfaces=parse_net_dev(NET_DEV),
        default_interface="eth0",
    )


def _usage(cpu: int, working_set: int, rss: int | None, rx: int | None = None) -> ContainerUsage:
    return ContainerUsage(
        timestamp=1_700_000_009.0,
        cpu_usage_ns=cpu,
        memory_usage_bytes=working_set + 10,
        memory_working_set_bytes=working_set,
        memory_rss_bytes=rss,
        rx_bytes=rx,
        tx_bytes=None if rx is None else 2 * rx,
        rx_errors=None if rx is None else 0,
        tx_errors=None,
    )


def _snapshot() -> Snapshot:
    web = PodSample("default", "web", "uid-1")
    web.containers = [
        ContainerSample("a", "app", 1_700_000_001.0, _usage(3_000_000_000, 1000, 600, rx=50), 400_000_000),
        ContainerSample("b", "side", 1_700_000_002.0, _usage(1_000_000_000, 500, None), None),
    ]
    odd = PodSample("ns", 'we"ird\\pod', "uid-2")
    odd.containers = [ContainerSample("c", "x", 1_700_000_003.0, None, None)]  # the runtime gave no numbers
    return Snapshot("n1", _host(), node_nano_cores=1_500_000_000, pods=[web, odd], scrape_error=True)


def test_summary_pods_sum_their_containers() -> None:
    body = summary(_snapshot())
    node = body["node"]
    assert node["cpu"] == {
        "time": "2023-11-14T22:13:30Z",
        "usageNanoCores": 1_500_000_000,
        "usageCoreNanoSeconds": 5_000_000_000,
    }
    assert node["network"]["name"] == "eth0" and node["network"]["rxErrors"] == 3
    assert [i["name"] for i in node["network"]["interfaces"]] == ["eth0"]  # no loopback, no veth
    web, odd = body["pods"]
    assert web["podRef"] == {"name": "web", "namespace": "default", "uid": "uid-1"}
    assert web["startTime"] == rfc3339(1_700_000_001.0)
    app, side = web["containers"]
    assert app["cpu"]["usageNanoCores"] == 400_000_000 and "usageNanoCores" not in side["cpu"]
    assert app["memory"] == {
        "time": "2023-11-14T22:13:29Z",
        "usageBytes": 1010,
        "workingSetBytes": 1000,
        "rssBytes": 600,
    }
    assert "rssBytes" not in side["memory"]
    assert web["cpu"] == {"time": "2023-11-14T22:13:29Z", "usageCoreNanoSeconds": 4_000_000_000}  # one rate unknown
    assert web["memory"] == {"time": "2023-11-14T22:13:29Z", "usageBytes": 1520, "workingSetBytes": 1500}
    assert web["network"]["rxBytes"] == 50 and web["network"]["txBytes"] == 100
    started = rfc3339(1_700_000_003.0)
    assert odd == {
        "podRef": {"name": 'we"ird\\pod', "namespace": "ns", "uid": "uid-2"},
        "startTime": started,
        "containers": [{"name": "x", "startTime": started}],
    }
    assert all("network" not in pod for pod in summary(_snapshot(), only_cpu_and_memory=True)["pods"])


def test_resource_metrics_parse_as_prometheus_text() -> None:
    text = resource_metrics(_snapshot())
    assert "# TYPE container_cpu_usage_seconds_total counter\n" in text
    assert "\nscrape_error 1\n" in text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    app = (("container", "app"), ("namespace", "default"), ("pod", "web"))
    assert samples[("container_cpu_usage_seconds_total", app)].value == 3.0
    assert samples[("container_cpu_usage_seconds_total", app)].timestamp == 1_700_000_009.0
    assert samples[("container_memory_working_set_bytes", app)].value == 1000
    assert samples[("container_start_time_seconds", app)].value == 1_700_000_001.0
    assert samples[("pod_cpu_usage_seconds_total", (("namespace", "default"), ("pod", "web")))].value == 4.0
    assert samples[("pod_memory_working_set_bytes", (("namespace", "default"), ("pod", "web")))].value == 1500
    assert samples[("node_cpu_usage_seconds_total", ())].value == 5.0
    assert samples[("node_memory_working_set_bytes", ())].value == (24684084 - 23976648 - 100000) * 1024
    assert samples[("scrape_error", ())].value == 1
    # the odd pod's name survives escaping; its container has a start time but no usage samples
    odd = (("container", "x"), ("namespace", "ns"), ("pod", 'we"ird\\pod'))
    assert samples[("container_start_time_seconds", odd)].value == 1_700_000_003.0
    assert 'pod="we\\"ird\\\\pod"' in text
    assert ("container_cpu_usage_seconds_total", odd) not in samples


def test_rate_needs_a_recent_earlier_sample() -> None:
    assert _rate((10.0, 1_000), (11.0, 501_000)) == 500_000
    assert _rate(None, (11.0, 1)) is None
    assert _rate((10.9, 0), (11.0, 1)) is None  # too close: noise
    assert _rate((0.0, 0), (601.0, 1)) is None  # too old
    assert _rate((10.0, 5), (11.0, 1)) is None  # the counter went back: a different process


async def test_collector_answers_404_and_503(tmp_path: Path) -> None:
    from kubeedge.plugins.common.stream_protocol import MetricsRequest
    from kubeedge.plugins.edged.podman import PodmanRuntime
    from kubeedge.plugins.edgestream.stats import StatsCollector, StatsError

    # a podman runtime whose API service is not running: the collector cannot list the node's containers
    runtime = PodmanRuntime(
        {"socket": str(tmp_path / "absent.sock"), "startService": False, "containersConf": ""},
        data_dir=tmp_path,
        node_name="n1",
    )
    collector = StatsCollector(runtime, "n1", tmp_path)
    with pytest.raises(StatsError) as caught:
        await collector.serve(MetricsRequest("/stats/summary"))
    assert caught.value.code == 503 and "not reachable" in str(caught.value)
    with pytest.raises(StatsError) as caught:
        await collector.serve(MetricsRequest("/metrics/cadvisor"))
    assert caught.value.code == 404
    assert "/metrics/cadvisor" in str(caught.value) and "/metrics/resource" in str(caught.value)


def test_requests_close_together_measure_against_an_older_sample_and_never_a_stale_one() -> None:
    collector = StatsCollector(runtime=None, node="n", data_dir=None)
    first = {"node": (100.0, 0)}
    assert collector._rates(first) == {"node": None}  # nothing earlier: the caller samples an interval itself
    collector._remember(first, {"node": None})
    second = {"node": (101.0, 1_000_000_000)}
    assert collector._rates(second) == {"node": 1_000_000_000}
    collector._remember(second, collector._rates(second))
    # 50 ms later: too close to the second sample, so the rate is taken against the first (1.05 s back)
    third = {"node": (101.05, 1_100_000_000)}
    assert collector._rates(third) == {"node": int(1_100_000_000 / 1.05)}
    # a counter whose only earlier sample is too close reuses the rate measured just before
    collector._history = [second]
    assert collector._rates(third) == {"node": 1_000_000_000}
    # ten minutes on, nothing earlier describes now: no rate, so the caller samples again
    assert collector._rates({"node": (800.0, 9_000_000_000)}) == {"node": None}
