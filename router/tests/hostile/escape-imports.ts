// Tries to load code at run time: remote, npm, jsr and host files. (The same
// imports written statically are refused at deploy time.) Expect: all refused.
export default async (_req: Request) => {
  const out: Record<string, string> = {};
  for (
    const spec of [
      "https://remote.invalid/mod.ts",
      "npm:left-pad",
      "jsr:@std/path",
      "/etc/passwd",
      "file:///etc/hostname",
    ]
  ) {
    try {
      await import(spec);
      out[spec] = "ALLOWED";
    } catch (e) {
      out[spec] = "refused: " + String(e).slice(0, 100);
    }
  }
  return Response.json(out);
};
