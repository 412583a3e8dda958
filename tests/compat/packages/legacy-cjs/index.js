"use strict";
var util = require("./util");

function leftPad(s, n, ch) {
  s = String(s);
  ch = ch || " ";
  while (s.length < n) s = ch + s;
  return s;
}

module.exports = {
  leftPad: leftPad,
  sum: util.sum,
  kind: "commonjs",
};
