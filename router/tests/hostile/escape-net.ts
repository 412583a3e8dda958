// Tries to reach the platform's own services and private networks.
// GET /?targets=<JSON array of "host:port" on this machine> — each is tried with
// fetch and with a raw TCP connect. Addresses off this machine are only checked
// with Deno.permissions.query, so no packet ever leaves the host.
// Expect: every attempt refused or "denied".
export default async (req: Request) => {
  const params = new URL(req.url).searchParams;
  const targets: string[] = JSON.parse(params.get("targets") ?? "[]");
  // this host's own interface addresses: checked without sending anything
  const own: string[] = JSON.parse(params.get("own") ?? "[]");
  const out: Record<string, string> = {};
  const attempt = async (name: string, run: () => Promise<unknown>) => {
    try {
      const v = await run();
      out[name] = "ALLOWED: " + String(v).slice(0, 60);
    } catch (e) {
      out[name] = "refused: " + String(e).slice(0, 100);
    }
  };
  for (const t of targets) {
    await attempt(
      "fetch " + t,
      () => fetch(`http://${t}/healthz`).then((r) => r.status),
    );
    const colon = t.lastIndexOf(":");
    const hostname = t.slice(0, colon).replace(/^\[|\]$/g, "");
    const port = Number(t.slice(colon + 1));
    await attempt("connect " + t, async () => {
      const c = await Deno.connect({ hostname, port });
      c.close();
      return "connected";
    });
  }
  for (
    const host of [
      ...own,
      "169.254.169.254",
      "169.254.169.254:80",
      "10.0.0.1",
      "172.16.0.1",
      "192.168.1.1",
      "100.64.0.1",
      "[fd00:ec2::254]",
    ]
  ) {
    const s = await Deno.permissions.query({ name: "net", host });
    out["permission " + host] = s.state === "denied"
      ? "refused: denied"
      : "ALLOWED: " + s.state;
  }
  return Response.json(out);
};
