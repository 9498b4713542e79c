// TiPAI: show each run's report on the node that made it, as readable text.
// The nodes send it as UI data under "tipai_text" (the TiPAI KSampler and Save Tournament Log
// when they finish; the Patch Model when the sampler it patched finishes). The box exists from the
// moment the node is made, so the node's size does not change when a run ends.
import { app } from "../../scripts/app.js";

const NODES = new Set(["TiPAIKSampler", "TiPAIPatchModel", "TiPAISaveTournamentLog", "TiPAIRefereeRefine", "TiPAIRegionPrompt"]);
const WIDGET = "tipai_report";
const PLACEHOLDER = "The TiPAI report of the run shows here after Run.";

function reportWidget(node) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (widget) return widget;
  const factory = window.comfyAPI?.widgets?.ComfyWidgets?.MARKDOWN;
  if (!factory) return null;
  widget = factory(node, WIDGET, ["MARKDOWN", { default: PLACEHOLDER }], app).widget;
  widget.options.read_only = true;
  widget.serialize = false; // never part of widgets_values: saved workflows stay as they were
  if (widget.element) {
    widget.element.readOnly = true;
  }
  return widget;
}

app.registerExtension({
  name: "TiPAI.Report",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const out = onNodeCreated?.apply(this, arguments);
      const widget = reportWidget(this);
      if (widget) widget.value = PLACEHOLDER;
      return out;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const text = output?.tipai_text?.[0];
      const widget = text === undefined ? null : reportWidget(this);
      if (widget) {
        widget.value = text;
        this.setDirtyCanvas?.(true, true);
      }
    };
  },
});
