// GET /gb streams 1 GiB; GET /endless never ends. Expect: both stream through
// without the router buffering; a client hanging up ends the stream.
export default (req: Request) => {
  const path = new URL(req.url).pathname;
  const chunk = new Uint8Array(256 * 1024).fill(97);
  if (path === "/gb" || path === "/endless") {
    const total = path === "/gb" ? 1024 * 1024 * 1024 : Infinity;
    let sent = 0;
    return new Response(
      new ReadableStream({
        pull(c) {
          if (sent >= total) return c.close();
          c.enqueue(chunk);
          sent += chunk.length;
        },
      }),
    );
  }
  return new Response("alive");
};
