// A helper script of the project, not part of the function. Never run.
console.log("seeding");
