// Tries to read and write outside its sandbox. Expect: every attempt outside
// its own temporary directory is refused; inside it, writing works. (/tmp is
// its own private tmpfs where the host allows one: writing there is fine and
// tested elsewhere; /var/tmp is the host's.)
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
      "/var/tmp/skiff-escape",
      "/tmp/../etc/skiff-escape",
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
    // Its temp dir: Deno.makeTempFile uses /tmp (private to the instance)
    // or, where the host gives no private /tmp, $TMPDIR (its instance dir).
    const f = await Deno.makeTempFile();
    await Deno.writeTextFile(f, "mine");
    own = await Deno.readTextFile(f);
  } catch (e) {
    own = "failed: " + String(e);
  }
  return Response.json({ attempts: out, own });
};
