// The CodeMirror editors: the source editor with deploy diagnostics at their
// lines, and a read-only unified diff of two versions.

import { basicSetup, EditorView } from "codemirror";
import { javascript } from "@codemirror/lang-javascript";
import { type Diagnostic, lintGutter, setDiagnostics } from "@codemirror/lint";
import { unifiedMergeView } from "@codemirror/merge";
import { EditorState } from "@codemirror/state";
import { placeOf } from "../diagnostics.ts";

// CodeMirror adds its own <style> element; the page's CSP allows it by the
// nonce the manager put in this page (no 'unsafe-inline').
const nonce = EditorView.cspNonce.of(
  document.querySelector('meta[name="csp-nonce"]')?.getAttribute("content") ?? "",
);

export function sourceEditor(parent: HTMLElement, doc: string, label: string): EditorView {
  return new EditorView({
    doc,
    parent,
    extensions: [
      nonce,
      basicSetup,
      javascript({ typescript: true }),
      lintGutter(),
      EditorView.contentAttributes.of({ "aria-label": label }),
    ],
  });
}

/** Marks each diagnostic at its line (or the first line when it names none). */
export function showDiagnostics(
  view: EditorView,
  items: Array<{ text: string; severity: "warning" | "error" }>,
): void {
  const doc = view.state.doc;
  const out: Diagnostic[] = items.map(({ text, severity }) => {
    const at = placeOf(text);
    const line = doc.line(Math.min(Math.max(at?.line ?? 1, 1), doc.lines));
    const from = Math.min(line.from + Math.max((at?.column ?? 1) - 1, 0), line.to);
    return { from, to: line.to > from ? line.to : from, severity, message: text };
  });
  view.dispatch(setDiagnostics(view.state, out));
}

export function diffView(parent: HTMLElement, older: string, newer: string, label: string): EditorView {
  return new EditorView({
    doc: newer,
    parent,
    extensions: [
      nonce,
      basicSetup,
      javascript({ typescript: true }),
      EditorState.readOnly.of(true),
      EditorView.editable.of(false),
      EditorView.contentAttributes.of({ "aria-label": label }),
      unifiedMergeView({ original: older, mergeControls: false, highlightChanges: true }),
    ],
  });
}
