export function route(path: string): Response {
  if (path === "/") return new Response("home");
  if (path === "/about") return new Response("about us");
  return new Response("no such page", { status: 404 });
}
