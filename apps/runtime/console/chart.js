// A small line chart on a canvas: the last samples of one series, scaled to
// their own maximum, with the newest value in the caption (the text a screen
// reader gets, since the canvas is an image).

import { h } from "./dom.js";

/** Most samples a chart keeps (two minutes of the health page's refresh). */
const SAMPLES = 60;

export function chart(title, unit, format) {
  const canvas = h("canvas", { role: "img", "aria-label": `${title}: no sample yet` });
  const value = h("span", { class: "mono" }, "–");
  const figure = h("figure", { class: "chart" }, h("figcaption", {}, h("span", {}, title), value), canvas);
  const samples = [];
  const draw = () => {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth * ratio;
    const height = canvas.clientHeight * ratio;
    if (!width || !height) return;
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, width, height);
    context.strokeStyle = "#d0d7de";
    context.lineWidth = ratio;
    context.strokeRect(0, 0, width, height);
    const known = samples.filter((s) => s !== null);
    if (!known.length) return;
    const top = Math.max(...known) || 1;
    // Headroom above the highest sample, so the line never runs along the edge.
    const scale = top * 1.15;
    context.strokeStyle = "#0969da";
    context.lineWidth = 2 * ratio;
    context.beginPath();
    let drawing = false;
    samples.forEach((sample, at) => {
      if (sample === null) { drawing = false; return; }
      const x = (at / (SAMPLES - 1)) * width;
      const y = height - (sample / scale) * (height - 4 * ratio) - 2 * ratio;
      if (drawing) context.lineTo(x, y); else context.moveTo(x, y);
      drawing = true;
    });
    context.stroke();
    context.fillStyle = "#57606a";
    context.font = `${11 * ratio}px system-ui, sans-serif`;
    context.fillText(`max ${format(top)} ${unit} · last 2 min`, 4 * ratio, 13 * ratio);
  };
  return {
    element: figure,
    /** Adds a sample (`null`: nothing to show for this interval). */
    push(sample) {
      samples.push(sample);
      while (samples.length < SAMPLES) samples.unshift(null);
      while (samples.length > SAMPLES) samples.shift();
      const text = sample === null ? "–" : `${format(sample)} ${unit}`;
      value.textContent = text;
      canvas.setAttribute("aria-label", `${title}: now ${text}`);
      canvas.dataset.samples = String(samples.filter((s) => s !== null).length);
      draw();
    },
  };
}
