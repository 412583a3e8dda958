// The simplest shape: a default-exported function from Request to Response.
export default (req: Request): Response => {
  const url = new URL(req.url);
  const name = url.searchParams.get("name") ?? "world";
  return new Response(`hello, ${name}`, { headers: { "content-type": "text/plain; charset=utf-8" } });
};
