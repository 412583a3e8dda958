// Tries to read and write outside its sandbox. Expect: every attempt outside
// its own temporary directory is refused; inside it, writing works.
// GET /?paths=<JSON array of absolute paths to read>
export default async (req: Request) => {
  const paths: string[] = JSON.parse(
    new URL(req.url).searchParams.get("paths") ?? "[]",
  );
  const out: Record<string, string> = {};
  const attempt = async (name: string, run: () => unknown) => {
    try {
      const v = await run();
      out[name] = "ALLOWED: " + String(v).slice(0, 60);
    } catch (e) {
      out[name] = "refused: " + String(e).slice(0, 100);
    }
  };
  for (
    const p of [
      "/etc/passwd",
      "/etc/shadow",
      "/proc/self/environ",
      "/proc/1/cmdline",
      ...paths,
    ]
  ) {
    await attempt("read " + p, () => Deno.readTextFile(p));
  }
  await attempt("list /", () => Array.from(Deno.readDirSync("/")).length);
  await attempt("stat data dir", () => Deno.statSync(paths[0] ?? "/").isFile);
  for (
    const p of [
      "/tmp/skiff-escape",
      "../skiff-escape",
      "/etc/skiff-escape",
      "/dev/shm/skiff-escape",
    ]
  ) {
    await attempt("write " + p, () => Deno.writeTextFile(p, "escaped"));
  }
  await attempt("symlink out", () => Deno.symlink("/etc/passwd", "./link"));
  let own = "";
  try {
    await Deno.writeTextFile("./own.txt", "mine");
    own = await Deno.readTextFile("./own.txt");
  } catch (e) {
    own = "failed: " + String(e);
  }
  return Response.json({ attempts: out, own });
};
