"""The figures of the report (ids 1a…6b), from the raw results of a run."""

from .common import TARGETS


def figures(results, cfg):
    """The list of figures: each with its Skiff value, peers, ratio, target and commands."""
    raw = results["raw"]
    figs = []

    def add(fid, name, skiff, peers=None, ratio=None, target_key=None, cmd=None, unit=""):
        tgt = TARGETS.get(target_key) if target_key else None
        judged = ratio if target_key and target_key.endswith(("ratio", "haproxy")) else skiff
        met = None
        if tgt and judged is not None:
            op, v = tgt
            met = judged >= v if op == ">=" else judged <= v
        figs.append({"id": fid, "name": name, "unit": unit, "skiff": skiff,
                     "peers": peers or {}, "ratio": ratio,
                     "target": f"{tgt[0]} {tgt[1]}" if tgt else None,
                     "target_key": target_key, "met": met,
                     "commands": list(dict.fromkeys(cmd or []))})

    c = results["commands"]
    t = raw.get("throughput")
    if t:
        sk = t["skiff"]["rps"]
        add("1a", f"Warm throughput, wrk -t2 -c50 (req/s; median of {cfg['rounds']} runs)", sk,
            {k: t[k]["rps"] for k in ("direct", "haproxy", "nginx")},
            sk / t["haproxy"]["rps"], "router_div_haproxy",
            [x for k in ("direct", "skiff", "haproxy", "nginx") for x in c.get(f"throughput_{k}", [])],
            "req/s")
        add("1b", "Warm throughput: p50 latency under load (ms; median of runs)", t["skiff"]["p50_ms_median"],
            {k: t[k]["p50_ms_median"] for k in ("direct", "haproxy", "nginx")}, unit="ms")
        add("1c", "Warm throughput: p99 latency under load (ms; median of runs)", t["skiff"]["p99_ms_median"],
            {k: t[k]["p99_ms_median"] for k in ("direct", "haproxy", "nginx")}, unit="ms")
        add("1d", "Router ÷ direct throughput", sk / t["direct"]["rps"],
            ratio=sk / t["direct"]["rps"])
        add("1e", "Proxy CPU per 1,000 requests (ms)", t["skiff"]["cpu_ms_per_1k_req"]["proxy"],
            {k: t[k]["cpu_ms_per_1k_req"]["proxy"] for k in ("haproxy", "nginx")},
            t["skiff"]["cpu_ms_per_1k_req"]["proxy"] / max(t["haproxy"]["cpu_ms_per_1k_req"]["proxy"], 1e-9),
            unit="ms")
    lat = raw.get("latency")
    if lat:
        d, s = lat["direct"]["latency_ms"], lat["skiff"]["latency_ms"]
        h = lat["haproxy"]["latency_ms"] if "haproxy" in lat else None
        rate = cfg["rate"]
        cmds = (c.get("latency_direct", []) + c.get("latency_skiff", [])
                + c.get("latency_haproxy", []))
        n = cfg["rounds"]

        def peers(q):
            p = {"direct": d[q], "router (absolute)": s[q]}
            if h:
                p["HAProxy added"] = h[q] - d[q]
            return p

        add("2a", f"Added latency at {rate} req/s, p50 (ms; median of {n} runs)", s["p50"] - d["p50"],
            peers("p50"), None, "added_p50_ms", cmds, "ms")
        add("2b", f"Added latency at {rate} req/s, p99 (ms; median of {n} runs)", s["p99"] - d["p99"],
            peers("p99"), None, "added_p99_ms", cmds, "ms")
        add("2c", f"Added latency at {rate} req/s, p99.9 (ms; median of {n} runs)", s["p999"] - d["p999"],
            peers("p999"), cmd=cmds, unit="ms")
    cold = raw.get("cold")
    if cold:
        a, f = cold["after_idle_ms"], cold["first_call_ms"]
        cc = c.get("cold", [])
        add("3a", f"Cold start after idle, p50 (ms, n={a['count']})", a["p50"], target_key="cold_p50_ms", cmd=cc, unit="ms")
        add("3b", f"Cold start after idle, p95 (ms, n={a['count']})", a["p95"], cmd=cc, unit="ms")
        add("3c", f"Cold start after idle, p99 (ms, n={a['count']})", a["p99"], target_key="cold_p99_ms", cmd=cc, unit="ms")
        add("3d", f"Cold start, first call after deploy, p50 (ms, n={f['count']})", f["p50"], target_key="cold_p50_ms", cmd=cc, unit="ms")
        add("3e", f"Cold start, first call after deploy, p99 (ms, n={f['count']})", f["p99"], target_key="cold_p99_ms", cmd=cc, unit="ms")
    dep = raw.get("deploy")
    if dep:
        cc = c.get("deploy", [])
        n = dep["total_ms"]["count"]
        add("4a", f"Deploy to first success, p50 (ms, n={n})", dep["total_ms"]["p50"],
            {"of which POST /func": dep["post_ms"]["p50"], "of which until 200": dep["until_200_ms"]["p50"]},
            target_key="deploy_p50_ms", cmd=cc, unit="ms")
        add("4b", f"Deploy to first success, p95 (ms, n={n})", dep["total_ms"]["p95"],
            {"of which POST /func": dep["post_ms"]["p95"], "of which until 200": dep["until_200_ms"]["p95"]},
            cmd=cc, unit="ms")
    dd = raw.get("deploy_deps")
    if dd:
        cc = c.get("deploy_deps", [])
        add("4c", f"Deploy to first success, hono + zod from a local npm registry, cold cache, p50 (ms, n={dd['cold_ms']['count']})",
            dd["cold_ms"]["p50"], cmd=cc, unit="ms")
        add("4d", f"… same, warm cache, p50 (ms, n={dd['warm_ms']['count']})",
            dd["warm_ms"]["p50"], cmd=cc, unit="ms")
    l1, lm = raw.get("lookup_1"), raw.get("lookup_many")
    if l1 and lm:
        cc = c.get("lookup_1_function", [])[:1] + c.get("lookup_1000_functions", [])[:1]
        add("5a", f"Router latency, warm function, with {lm['functions']} functions vs {l1['functions']}: p99 (ms)",
            lm["p99"], {f"with {l1['functions']}": l1["p99"]}, lm["p99"] / l1["p99"],
            "lookup_p99_ratio", cc, "ms")
        add("5b", "… same, p50 (ms)", lm["p50"], {f"with {l1['functions']}": l1["p50"]},
            lm["p50"] / l1["p50"], cmd=cc, unit="ms")
    cgr = raw.get("callgrind") or {}
    if "skiff" in cgr and "skiff_many_functions" in cgr:
        one, many = cgr["skiff"], cgr["skiff_many_functions"]
        nf = many["functions"]
        cc = c.get("callgrind", [])[:1] + c.get("callgrind_many", [])[:1]
        lk1 = one["key_functions"].get("Directory::lookup")
        lkn = many["key_functions"].get("Directory::lookup")
        if lk1 and lkn:
            add("5a1", f"`Directory::lookup` instructions per request, with {nf} functions vs 1 "
                "(callgrind)", lkn, {"with 1": lk1}, lkn / lk1, cmd=cc)
        r1 = one["key_functions"].get("proxy::route")
        rn = many["key_functions"].get("proxy::route")
        if r1 and rn:
            add("5a2", f"`proxy::route` (the request path) instructions per request, with {nf} "
                "functions vs 1 (callgrind)", rn, {"with 1": r1}, rn / r1, cmd=cc)
        add("5a3", "Router process instructions per request, incl. background change-feed polls, "
            f"with {nf} functions vs 1 (callgrind)", many["ir_per_request"],
            {"with 1": one["ir_per_request"]}, many["ir_per_request"] / one["ir_per_request"], cmd=cc)
    if raw.get("router_rss_kb_one") and raw.get("router_rss_kb_many"):
        m = raw.get("many", {})
        add("5c", f"Router RSS with {m.get('functions')} functions (MB), after the 5a runs",
            raw["router_rss_kb_many"] / 1024,
            {"router with 1 function": raw["router_rss_kb_one"] / 1024}, unit="MB",
            cmd=["VmRSS of each skiff-router from /proc/PID/status"])
    w = raw.get("warm")
    if w:
        cc = c.get("warm", [])
        add("5d", f"{w['instances']} warm instances: total RSS (MB)", w["total_rss_mb"],
            {"total PSS": w["total_pss_mb"]}, cmd=cc, unit="MB")
        add("5e", "RSS per warm instance (MB)", w["avg_rss_mb"],
            {"PSS": w["avg_pss_mb"], "RssAnon": w.get("avg_rss_anon_mb"),
             "RssFile": w.get("avg_rss_file_mb")},
            target_key="rss_per_instance_mb", cmd=cc, unit="MB")
        add("5f", f"Router RSS with {w['instances']} warm instances (MB)", w["router_rss_kb"] / 1024,
            unit="MB", cmd=["VmRSS of skiff-router from /proc/PID/status"])
    b = raw.get("burst")
    if b:
        cc = c.get("burst", [])
        add("6a", f"Burst of {b['requests']} idle functions: errors", b["errors"] + b["non_2xx"],
            target_key="burst_errors", cmd=cc)
        if b.get("latency_ms"):
            add("6b", f"Burst of {b['requests']} idle functions: p95 (ms)", b["latency_ms"]["p95"],
                {"p50": b["latency_ms"]["p50"], "max": b["latency_ms"]["max"],
                 "CPU s of the new instances": (b.get("cpu") or {}).get("instances_cpu_s"),
                 "router CPU s": (b.get("cpu") or {}).get("router_cpu_s")},
                target_key="burst_p95_ms", cmd=cc, unit="ms")
    nn = (raw.get("noisy_neighbour") or {}).get("configs") or {}
    on, off = nn.get("on"), nn.get("off")
    if on and off:
        cc = [x for k in ("on", "off") for x in
              c.get(f"noisy_{k}_b_alone", []) + c.get(f"noisy_{k}_flood", [])
              + c.get(f"noisy_{k}_b_flood", [])]
        rate = raw["noisy_neighbour"]["rate"]

        def errs(b):
            return b["errors"] + b["non_2xx"]

        add("7a", f"Noisy neighbour: B's failed requests at {rate} req/s while A floods, "
            "per-user rate limit on", errs(on["b_flood"]),
            {"limit off": errs(off["b_flood"])}, target_key="noisy_b_errors", cmd=cc)
        add("7b", f"Noisy neighbour: B's p99 while A floods ÷ B alone (ms), limit on",
            on["b_flood"]["latency_ms"]["p99"],
            {"B alone": on["b_alone"]["latency_ms"]["p99"],
             "limit off: under flood": off["b_flood"]["latency_ms"]["p99"],
             "limit off: alone": off["b_alone"]["latency_ms"]["p99"]},
            on["p99_ratio"], "noisy_p99_ratio", cc, "ms")
        add("7c", "Noisy neighbour: A's answers per second, 2xx (limit on)", on["a"]["ok_rps"],
            {"all (mostly 429)": on["a"]["rps"], "limit off: 2xx": off["a"]["ok_rps"],
             "limit off: all": off["a"]["rps"]}, cmd=cc, unit="req/s")
    return figs
