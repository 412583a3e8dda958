// A JSR package that depends on another JSR package.
import { slugify, titleCase } from "jsr:@skiff-test/text@^1.1.0";

export function headline(s: string): { title: string; slug: string } {
  return { title: titleCase(s), slug: slugify(s) };
}
