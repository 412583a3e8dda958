// A typo in a package name: the registry has no such package.
import { greet } from "npm:@skiff-test/greeet@1";

export default () => new Response(greet("typo"));
