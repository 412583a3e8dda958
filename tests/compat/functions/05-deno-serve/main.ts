// A plain Deno program: Deno.serve(handler) at the top level.
function handler(req: Request): Response {
  const url = new URL(req.url);
  if (url.pathname === "/health") return new Response("ok");
  return new Response(`Deno.serve handled ${url.pathname}`, { status: 200 });
}

Deno.serve(handler);
