// A service worker in plain JavaScript, directory upload, default entry index.js.
addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  event.respondWith(
    new Response(JSON.stringify({ worker: "js", q: url.searchParams.get("q") }), {
      headers: { "content-type": "application/json" },
    }),
  );
});
