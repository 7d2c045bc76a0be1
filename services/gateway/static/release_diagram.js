// The release flow drawn with GoJS (loaded as the classic script /static/vendor/go.js).
// render(graph) keeps the model in step with the graph data from release_graph.js:
// same keys -> properties updated in place (no relayout); new keys -> a new model.

const go = globalThis.go;

export const COLORS = {
  waiting: { fill: "#f3f4f6", stroke: "#9ca3af", lane: "#fafafa", link: "#c4c9d0" },
  running: { fill: "#dbeafe", stroke: "#1d4ed8", lane: "#f0f6ff", link: "#1d4ed8" },
  succeeded: { fill: "#dcfce7", stroke: "#15803d", lane: "#f3fcf5", link: "#16a34a" },
  failed: { fill: "#fee2e2", stroke: "#b91c1c", lane: "#fff5f5", link: "#dc2626" },
  skipped: { fill: "#ffedd5", stroke: "#c2410c", lane: "#fff8f0", link: "#ea580c" },
  rolled_back: { fill: "#ffedd5", stroke: "#c2410c", lane: "#fff8f0", link: "#ea580c" },
};
const PULSE = { fill: "#a5c8fd", stroke: "#60a5fa" };
const color = (part) => (status) => (COLORS[status] || COLORS.waiting)[part];
const FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";

function stepTemplate() {
  return new go.Node("Auto", { width: 112, height: 48, cursor: "pointer" })
    .add(
      new go.Shape("RoundedRectangle", { name: "SHAPE", parameter1: 6, strokeWidth: 2 })
        .bind("fill", "status", color("fill"))
        .bind("stroke", "status", color("stroke")),
      new go.Panel("Vertical", { margin: 2 }).add(
        new go.TextBlock({ font: `600 12px ${FONT}`, stroke: "#111827" }).bind("text", "label"),
        new go.TextBlock({
          font: `10px ${FONT}`,
          stroke: "#374151",
          width: 104,
          textAlign: "center",
          maxLines: 1,
          overflow: go.TextOverflow.Ellipsis,
        }).bind("text", "sub"),
      ),
    );
}

function terminalTemplate() {
  return new go.Node("Auto", { cursor: "pointer" }).add(
    new go.Shape("Circle", { name: "SHAPE", width: 76, height: 76, strokeWidth: 2 })
      .bind("fill", "status", color("fill"))
      .bind("stroke", "status", color("stroke")),
    new go.Panel("Vertical").add(
      new go.TextBlock({ font: `600 12px ${FONT}`, stroke: "#111827" }).bind("text", "label"),
      new go.TextBlock({ font: `10px ${FONT}`, stroke: "#374151" }).bind("text", "sub"),
    ),
  );
}

function laneTemplate() {
  return new go.Group("Auto", {
    cursor: "pointer",
    layout: new go.GridLayout({
      wrappingColumn: 7,
      spacing: new go.Size(22, 0),
      sorting: go.GridSorting.Ascending,
      comparer: (a, b) => a.data.order - b.data.order,
    }),
  }).add(
    new go.Shape("RoundedRectangle", { name: "SHAPE", parameter1: 8, strokeWidth: 2 })
      .bind("fill", "status", color("lane"))
      .bind("stroke", "status", color("stroke")),
    new go.Panel("Horizontal").add(
      new go.Panel("Vertical", { width: 124, margin: new go.Margin(4, 4, 4, 10), defaultAlignment: go.Spot.Left }).add(
        new go.TextBlock({
          font: `600 13px ${FONT}`,
          stroke: "#111827",
          width: 118,
          maxLines: 1,
          overflow: go.TextOverflow.Ellipsis,
        }).bind("text", "label"),
        new go.TextBlock({ font: `11px ${FONT}`, width: 118, maxLines: 2, overflow: go.TextOverflow.Ellipsis })
          .bind("text", "", (d) => (d.sub ? `${d.status.replace("_", " ")}: ${d.sub}` : d.status.replace("_", " ")))
          .bind("stroke", "status", color("stroke")),
      ),
      new go.Placeholder({ padding: new go.Margin(8, 10, 8, 4) }),
    ),
  );
}

function linkTemplate() {
  return new go.Link({
    fromSpot: go.Spot.Right,
    toSpot: go.Spot.Left,
    curve: go.Curve.Bezier,
    selectable: false,
    layerName: "Background",
  }).add(
    new go.Shape({ strokeWidth: 2 })
      .bind("stroke", "status", color("link"))
      .bind("strokeWidth", "status", (s) => (s === "waiting" ? 1.5 : 2.5)),
    new go.Shape({ toArrow: "Triangle", scale: 0.9, strokeWidth: 0 }).bind("fill", "status", color("link")),
  );
}

export class ReleaseDiagram {
  constructor(div, { licenseKey = "", onNodeClick = () => {} } = {}) {
    // The key must be set before any Diagram exists; the evaluation notice stays when it is empty.
    if (licenseKey) go.Diagram.licenseKey = licenseKey;
    this.div = div;
    this.running = "";
    this.animation = null;
    this.pendingPulse = null;
    const diagram = new go.Diagram(div, {
      isReadOnly: true,
      allowMove: false,
      allowCopy: false,
      allowDelete: false,
      "undoManager.isEnabled": false,
      "animationManager.isInitial": false,
      initialContentAlignment: go.Spot.TopLeft,
      padding: new go.Margin(24, 24, 24, 24),
      layout: new go.LayeredDigraphLayout({
        direction: 0,
        layerSpacing: 42,
        columnSpacing: 10,
        setsPortSpots: false,
        packOption: go.LayeredDigraphPack.Straighten,
      }),
    });
    // Only our own "running" pulse animates; layouts and model changes draw at once.
    diagram.animationManager.canStart = () => false;
    diagram.nodeTemplateMap.add("step", stepTemplate());
    diagram.nodeTemplateMap.add("terminal", terminalTemplate());
    diagram.groupTemplateMap.add("lane", laneTemplate());
    diagram.linkTemplate = linkTemplate();
    diagram.model = this.newModel({ nodes: [], links: [] });
    diagram.addDiagramListener("ObjectSingleClicked", (e) => {
      const part = e.subject.part;
      if (part && !(part instanceof go.Link) && part.data) onNodeClick(part.data.key);
    });
    diagram.addDiagramListener("LayoutCompleted", () => {
      this.fit();
      if (this.pendingPulse !== null) {
        const keys = this.pendingPulse;
        this.pendingPulse = null;
        this.stopPulse();
        this.pulse(keys);
      }
    });
    this.diagram = diagram;
    // The log panel opening beside it, or the window, changes the width: fit again.
    let width = div.clientWidth;
    new ResizeObserver(() => {
      if (div.clientWidth !== width) {
        width = div.clientWidth;
        this.fit();
      }
    }).observe(div);
  }

  newModel(graph) {
    return new go.GraphLinksModel({
      linkKeyProperty: "key",
      nodeDataArray: graph.nodes.map((n) => ({ ...n })),
      linkDataArray: graph.links.map((l) => ({ ...l })),
    });
  }

  render(graph) {
    const model = this.diagram.model;
    const keys = (arr) => arr.map((d) => d.key).join("\n");
    const running = graph.nodes.filter((n) => n.status === "running").map((n) => n.key);
    const rebuild = keys(model.nodeDataArray) !== keys(graph.nodes) || keys(model.linkDataArray) !== keys(graph.links);
    // Stop the pulse before the data changes: a stopped animation restores the colours it
    // started from, which must not overwrite the new status.
    if (rebuild || running.join("\n") !== this.running) this.stopPulse();
    if (rebuild) {
      // A pulse started before the new parts are laid out spoils the lanes' measurements:
      // it starts when the layout has completed.
      this.pendingPulse = running;
      this.diagram.model = this.newModel(graph);
      return;
    }
    this.diagram.commit((d) => {
      const m = d.model;
      for (const n of graph.nodes) update(m, m.findNodeDataForKey(n.key), n);
      for (const l of graph.links) update(m, m.findLinkDataForKey(l.key), l);
    }, null);
    if (this.pendingPulse !== null) this.pendingPulse = running;
    else if (!this.animation) this.pulse(running);
  }

  stopPulse() {
    if (this.animation) this.animation.stop();
    this.animation = null;
    this.running = "";
  }

  // Running nodes breathe: an endless reversible animation of their colours (never of their
  // size, which would move the layout).
  pulse(keys) {
    this.running = keys.join("\n");
    if (!keys.length) return;
    const anim = new go.Animation({ duration: 700, runCount: Infinity, reversible: true });
    for (const key of keys) {
      const part = this.diagram.findPartForKey(key);
      const shape = part && part.findObject("SHAPE");
      if (!shape) continue;
      anim.add(shape, "stroke", COLORS.running.stroke, PULSE.stroke);
      if (!(part instanceof go.Group)) anim.add(shape, "fill", COLORS.running.fill, PULSE.fill);
    }
    anim.start();
    this.animation = anim;
  }

  // Fit the width of the flow into the viewport (never enlarge); tall diagrams grow the
  // element so the page scrolls instead of shrinking 20 lanes into a stamp.
  fit() {
    const d = this.diagram;
    const bounds = d.documentBounds;
    if (!bounds.isReal() || bounds.width === 0) return;
    const width = this.div.clientWidth || 1000;
    const scale = Math.max(0.35, Math.min(1, (width - 8) / bounds.width));
    d.scale = scale;
    const height = Math.ceil(bounds.height * scale) + 8;
    const target = `${Math.max(220, height)}px`;
    if (this.div.style.height !== target) {
      this.div.style.height = target;
      d.requestUpdate();
    }
    d.position = bounds.position;
  }

  zoomToFit() {
    this.diagram.commandHandler.zoomToFit();
  }

  zoom(factor) {
    this.diagram.scale = Math.max(0.2, Math.min(3, this.diagram.scale * factor));
  }
}

function update(model, data, next) {
  if (!data) return;
  for (const [k, v] of Object.entries(next)) {
    if (k === "key" || k === "group" || k === "category" || k === "isGroup" || k === "from" || k === "to") continue;
    if (data[k] !== v) model.setDataProperty(data, k, v);
  }
}
