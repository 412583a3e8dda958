// Service-worker syntax (Cloudflare's first API): addEventListener("fetch", ...).
// deno-lint-ignore no-explicit-any
type FetchEvent = any;

async function handleRequest(request: Request): Promise<Response> {
  const url = new URL(request.url);
  return new Response(`service worker saw ${request.method} ${url.pathname}`, {
    headers: { "cache-control": "no-store" },
  });
}

addEventListener("fetch", (event: FetchEvent) => {
  event.respondWith(handleRequest(event.request));
});
