// Deno.serve with options first: the port the tutorial used.
Deno.serve({ port: 8000, hostname: "0.0.0.0" }, async (req) => {
  const text = req.body ? await req.text() : "";
  return new Response(`port-8000 app got ${text.length} bytes`, {
    headers: { "x-app": "port-8000" },
  });
});
