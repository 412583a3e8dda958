// Node built-ins through node: specifiers.
import { createHash, randomUUID } from "node:crypto";
import { Buffer } from "node:buffer";
import path from "node:path";

export default async (req: Request): Promise<Response> => {
  const body = await req.text();
  const url = new URL(req.url);
  return Response.json({
    sha256: createHash("sha256").update(body).digest("hex"),
    base64: Buffer.from(body, "utf8").toString("base64"),
    file: path.basename(url.pathname),
    ext: path.extname(url.pathname),
    joined: path.posix.join("/srv", "app", "..", "static", "x.css"),
    uuidLength: randomUUID().length,
  });
};
