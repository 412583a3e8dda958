// Server-sent events: a few events written over time, then the stream ends.
export default (req: Request): Response => {
  const count = Number(new URL(req.url).searchParams.get("count") ?? "3");
  const enc = new TextEncoder();
  let i = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(enc.encode(": stream start\n\n"));
      timer = setInterval(() => {
        i++;
        controller.enqueue(enc.encode(`id: ${i}\nevent: tick\ndata: {"n":${i}}\n\n`));
        if (i >= count) {
          clearInterval(timer);
          controller.enqueue(enc.encode("event: done\ndata: bye\n\n"));
          controller.close();
        }
      }, 20);
    },
    cancel() {
      clearInterval(timer);
    },
  });
  return new Response(body, {
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache" },
  });
};
