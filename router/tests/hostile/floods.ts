// Floods of timers, promises and workers (threads). Expect: contained — the
// caller gets an answer or a documented error status, the function answers
// again afterwards, and its neighbours never notice.
export default async (req: Request) => {
  switch (new URL(req.url).pathname) {
    case "/timers": {
      for (let i = 0; i < 100_000; i++) setInterval(() => {}, 1);
      return new Response("timers set");
    }
    case "/promises": {
      let p: Promise<number> = Promise.resolve(0);
      for (let i = 0; i < 1_000_000; i++) p = p.then((n) => n + 1);
      return new Response("promises " + await p);
    }
    case "/workers": {
      const src = "data:text/javascript,setInterval(() => {}, 1000)";
      let n = 0;
      try {
        for (; n < 2000; n++) new Worker(src, { type: "module" });
      } catch (e) {
        return new Response(`workers stopped at ${n}: ${e}`);
      }
      return new Response(`workers ${n}`);
    }
    default:
      return new Response("alive");
  }
};
