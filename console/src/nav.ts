// Re-draws the current page (a reload would forget the in-memory token).
export function rerender(): void {
  globalThis.dispatchEvent(new HashChangeEvent("hashchange"));
}
