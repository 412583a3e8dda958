// jsr: imports: a package, a subpath export, and a package depending on another.
import { slugify, VERSION } from "jsr:@skiff-test/text@^1";
import { titleCase } from "jsr:@skiff-test/text@^1/case";
import { headline } from "jsr:@skiff-test/kit@0.2";

export default (req: Request) => {
  const title = decodeURIComponent(new URL(req.url).pathname.slice(1)) || "untitled post";
  return Response.json({ slug: slugify(title), title: titleCase(title), headline: headline(title), version: VERSION });
};
