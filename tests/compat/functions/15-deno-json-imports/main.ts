// Bare names through the upload's deno.json import map (npm, jsr, a prefix, a path alias).
import { greet } from "greet";
import { slugify } from "@std/text";
import { reverse } from "toolkit/strings";
import { banner } from "~/banner.ts";

export default {
  fetch(req: Request): Response {
    const who = new URL(req.url).searchParams.get("who") ?? "deno json";
    return Response.json({ greeting: greet(who), slug: slugify(who), reversed: reverse(who), banner: banner() });
  },
};
