// Tries environment, processes, native code and system information. Expect:
// every attempt refused. (Deno.execPath(), Deno.pid and Deno.version need no
// permission in Deno 2: they reveal where the Deno binary is, nothing more;
// SECURITY.md lists them.)
export default async (_req: Request) => {
  const out: Record<string, string> = {};
  const attempts: [string, () => unknown][] = [
    // The host's env is invisible: with no env of its own, nothing at all.
    ["env get", () => {
      const v = Deno.env.get("PATH");
      if (v === undefined) throw new Error("not visible");
      return v;
    }],
    ["env toObject", () => {
      const o = JSON.stringify(Deno.env.toObject());
      if (o === "{}") throw new Error("empty");
      return o;
    }],
    ["command", () => new Deno.Command("id").outputSync().stdout.length],
    [
      "command async",
      () => new Deno.Command("/bin/sh", { args: ["-c", "id"] }).output(),
    ],
    ["kill pid 1", () => Deno.kill(1, "SIGTERM")],
    [
      "ffi dlopen",
      () =>
        Deno.dlopen("libc.so.6", { getpid: { parameters: [], result: "i32" } }),
    ],
    ["hostname", () => Deno.hostname()],
    ["osRelease", () => Deno.osRelease()],
    ["loadavg", () => Deno.loadavg()],
    ["networkInterfaces", () => Deno.networkInterfaces().length],
    ["systemMemoryInfo", () => Deno.systemMemoryInfo().total],
    ["uid", () => Deno.uid()],
  ];
  for (const [name, run] of attempts) {
    try {
      const v = await run();
      out[name] = "ALLOWED: " + String(v).slice(0, 60);
    } catch (e) {
      out[name] = "refused: " + String(e).slice(0, 100);
    }
  }
  return Response.json(out);
};
