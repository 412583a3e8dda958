// npm: with exact versions, as a careful user pins them.
import { greet, GREETING_VERSION } from "npm:@skiff-test/greet@1.0.0";
import { welcome } from "npm:@skiff-test/welcome@0.3.0";

export default (req: Request) => {
  const name = new URL(req.url).searchParams.get("name") ?? "stranger";
  return Response.json({ greeting: greet(name), welcome: welcome(name, "Skiff"), version: GREETING_VERSION });
};
