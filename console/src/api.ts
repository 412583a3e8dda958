// The manager's API, with the bearer token held in memory only: a reload or a
// closed tab forgets it, and no script can find it in storage or a cookie.

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

let token: string | null = null;
let user: string | null = null;
const listeners: Array<() => void> = [];

export function session(): { token: string; user: string } | null {
  return token && user ? { token, user } : null;
}

export function signIn(t: string, u: string): void {
  token = t;
  user = u;
}

export function signOut(): void {
  token = null;
  user = null;
  for (const l of listeners) l();
}

/** Called when the manager refuses the token (revoked or expired). */
export function onSignedOut(l: () => void): void {
  listeners.push(l);
}

export interface Answer {
  status: number;
  text: string;
  // deno-lint-ignore no-explicit-any
  json: any;
}

export async function call(
  method: string,
  path: string,
  body?: BodyInit,
  contentType?: string,
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (token) headers["Authorization"] = `Bearer ${token}`;
  if (contentType) headers["Content-Type"] = contentType;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body, credentials: "omit", cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "network", `the manager could not be reached (${String(e)})`);
  }
  const text = await res.text();
  let json = null;
  if ((res.headers.get("content-type") ?? "").includes("json")) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (!res.ok) {
    const code = json?.error?.code ?? "http_" + res.status;
    const message = json?.error?.message ?? (text || res.statusText);
    if (res.status === 401 && token) signOut();
    throw new ApiError(res.status, String(code), String(message));
  }
  return { status: res.status, text, json };
}

export const enc = encodeURIComponent;
