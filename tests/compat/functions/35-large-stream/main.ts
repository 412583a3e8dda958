// Streams a large generated body chunk by chunk (never all in memory).
const CHUNK = 64 * 1024;

export default (req: Request): Response => {
  const mib = Math.min(Number(new URL(req.url).searchParams.get("mib") ?? "1"), 32);
  const total = mib * 1024 * 1024;
  let sent = 0;
  const line = new TextEncoder().encode("0123456789abcdef".repeat(CHUNK / 16));
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= total) {
        controller.close();
        return;
      }
      const n = Math.min(CHUNK, total - sent);
      controller.enqueue(n === CHUNK ? line : line.subarray(0, n));
      sent += n;
    },
  });
  return new Response(body, { headers: { "content-type": "application/octet-stream" } });
};
