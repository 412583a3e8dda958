// Deno Deploy / Bun style: a default-exported object with a fetch method.
export default {
  async fetch(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const body = req.method === "GET" || req.method === "HEAD" ? null : await req.text();
    return Response.json({
      method: req.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      body,
      contentType: req.headers.get("content-type"),
    });
  },
};
