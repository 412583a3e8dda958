// Deploy warnings and errors are `deno check`/`deno bundle` text; each names
// its place as `at main.ts:3:7` (or `main.ts:3:7`). This finds that place so
// the editor can mark the line.

export interface Place {
  file: string;
  line: number;
  column: number;
}

const AT = /(?:^|\s|\()(?:file:\/\/\/?)?([\w./@-]+\.[cm]?[jt]sx?):(\d+):(\d+)/m;

export function placeOf(text: string): Place | null {
  const m = AT.exec(text);
  if (!m) return null;
  const line = Number(m[2]);
  const column = Number(m[3]);
  if (!Number.isSafeInteger(line) || line < 1 || !Number.isSafeInteger(column)) return null;
  return { file: m[1], line, column: Math.max(column, 1) };
}

/** The first line of a diagnostic, for a short summary. */
export function headline(text: string): string {
  return text.split("\n", 1)[0];
}
