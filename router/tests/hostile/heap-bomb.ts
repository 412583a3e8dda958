// GET /bomb allocates until the heap cap kills the instance. Expect: 502, then
// a fresh instance answers.
export default (req: Request) => {
  if (new URL(req.url).pathname === "/bomb") {
    const hog: string[][] = [];
    for (;;) hog.push(new Array(1_000_000).fill("x".repeat(16)));
  }
  return new Response("alive");
};
