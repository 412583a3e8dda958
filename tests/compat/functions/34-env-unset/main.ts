// Reading configuration that is not set, the way portable code guards it.
function setting(name: string, fallback: string): string {
  try {
    return Deno.env.get(name) ?? fallback;
  } catch {
    // Some platforms deny environment access altogether.
    return fallback;
  }
}

export default () =>
  Response.json({
    apiBase: setting("COMPAT_API_BASE", "https://api.example.invalid"),
    debug: setting("COMPAT_DEBUG", "false") === "true",
  });
