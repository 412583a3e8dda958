// A folder picked in the browser, packed as a POSIX tar (regular files only)
// for `POST /func` with `Content-Type: application/x-tar`.

const BLOCK = 512;

function header(name: string, size: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(BLOCK);
  const enc = new TextEncoder();
  const put = (text: string, at: number, len: number) => b.set(enc.encode(text).slice(0, len), at);
  const octal = (n: number, len: number) => n.toString(8).padStart(len - 1, "0");
  let prefix = "";
  let base = name;
  if (enc.encode(name).length > 100) {
    const cut = name.lastIndexOf("/", 154);
    prefix = name.slice(0, cut);
    base = name.slice(cut + 1);
  }
  put(base, 0, 100);
  put(octal(0o644, 8), 100, 8);
  put(octal(0, 8), 108, 8);
  put(octal(0, 8), 116, 8);
  put(octal(size, 12), 124, 12);
  put(octal(0, 12), 136, 12);
  put("        ", 148, 8);
  b[156] = "0".charCodeAt(0);
  put("ustar\u000000", 257, 8);
  put(prefix, 345, 155);
  let sum = 0;
  for (const x of b) sum += x;
  put(octal(sum, 7) + "\u0000", 148, 8);
  return b;
}

export async function tarOf(files: Array<{ path: string; file: Blob }>): Promise<Blob> {
  const parts: BlobPart[] = [];
  for (const f of files) {
    const data = new Uint8Array(await f.file.arrayBuffer());
    parts.push(header(f.path, data.length), data);
    const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
    if (pad) parts.push(new Uint8Array(pad));
  }
  parts.push(new Uint8Array(BLOCK * 2));
  return new Blob(parts, { type: "application/x-tar" });
}

/** A picked folder's files with paths inside it (the folder's own name cut). */
export function folderFiles(list: FileList): Array<{ path: string; file: Blob }> {
  const out: Array<{ path: string; file: Blob }> = [];
  for (const f of Array.from(list)) {
    const rel = (f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name;
    const path = rel.includes("/") ? rel.slice(rel.indexOf("/") + 1) : rel;
    if (path.split("/").some((p) => p === "node_modules" || p.startsWith("."))) continue;
    out.push({ path, file: f });
  }
  return out;
}
