export default (req: Request) => {
  const items = [1, 2, 3;
  return new Response(String(items.length));
};
