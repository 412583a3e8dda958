// Scratch files under /tmp: write, append, read back, list.
const dir = "/tmp/compat-notes";

export default async (req: Request): Promise<Response> => {
  await Deno.mkdir(dir, { recursive: true });
  const url = new URL(req.url);
  const file = `${dir}/notes.txt`;
  if (req.method === "POST") {
    await Deno.writeTextFile(file, (await req.text()) + "\n", { append: true });
  }
  let text = "";
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  const tmp = await Deno.makeTempFile({ prefix: "scratch-" });
  await Deno.writeTextFile(tmp, url.pathname);
  const back = await Deno.readTextFile(tmp);
  await Deno.remove(tmp);
  return Response.json({ lines: text.split("\n").filter(Boolean), files: names, tempRoundTrip: back });
};
