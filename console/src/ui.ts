// Shared bits of the pages: progress and error reporting.

import { ApiError } from "./api.ts";
import { append, clear, h } from "./dom.ts";

export function alertBox(message: string, kind: "error" | "ok" = "error"): HTMLElement {
  return h("div", { class: `alert ${kind}`, role: kind === "error" ? "alert" : "status", text: message });
}

export function describe(e: unknown): string {
  if (e instanceof ApiError) return e.status ? `${e.message} (${e.code}, ${e.status})` : e.message;
  return String(e);
}

/**
 * Runs `work` while `status` shows a progress bar and the seconds spent, then
 * what `work` answered (a success message), or the error if it failed.
 * Buttons inside `lock` are disabled meanwhile.
 */
export async function busy(
  status: HTMLElement,
  label: string,
  work: () => Promise<string | void>,
  lock?: HTMLElement,
): Promise<boolean> {
  clear(status);
  const started = performance.now();
  const secs = h("span", { class: "muted", text: "" });
  const bar = h("progress", { "aria-label": label });
  append(status, h("div", { class: "progress" }, bar, h("span", { text: label }), secs));
  const tick = setInterval(() => {
    secs.textContent = ` ${((performance.now() - started) / 1000).toFixed(0)} s`;
  }, 500);
  const buttons = lock ? Array.from(lock.querySelectorAll("button")) : [];
  for (const b of buttons) b.disabled = true;
  status.setAttribute("aria-busy", "true");
  try {
    const done = await work();
    clear(status);
    if (done) status.appendChild(alertBox(done, "ok"));
    return true;
  } catch (e) {
    clear(status);
    status.appendChild(alertBox(describe(e)));
    return false;
  } finally {
    clearInterval(tick);
    for (const b of buttons) b.disabled = false;
    status.removeAttribute("aria-busy");
  }
}
