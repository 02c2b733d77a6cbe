// A small tiled pan-and-zoom viewer for a DeepZoom pyramid (the .dzi this
// server makes): a canvas, the tiles of the level that matches the zoom, the
// next coarser level's tiles drawn first under them so panning never shows
// holes. Drag pans, the wheel zooms about the pointer, double-click resets.
"use strict";

async function openViewer(canvas, dziUrl) {
  const xml = new DOMParser().parseFromString(await (await fetch(dziUrl)).text(), "application/xml");
  const image = xml.getElementsByTagName("Image")[0];
  const size = xml.getElementsByTagName("Size")[0];
  const dz = {
    width: +size.getAttribute("Width"), height: +size.getAttribute("Height"),
    tile: +image.getAttribute("TileSize"), format: image.getAttribute("Format"),
    base: dziUrl.replace(/\.dzi$/, "_files/"),
  };
  dz.maxLevel = Math.ceil(Math.log2(Math.max(dz.width, dz.height, 1)));
  const tiles = new Map();  // "level/col_row" -> Image, bounded below
  const ctx = canvas.getContext("2d");
  let view = null;  // image pixels per screen pixel and the image point at the canvas's top left
  let pending = 0;

  function fit() {
    canvas.width = canvas.clientWidth; canvas.height = canvas.clientHeight;
    const scale = Math.max(dz.width / canvas.width, dz.height / canvas.height);
    view = { scale, x: (dz.width - canvas.width * scale) / 2, y: (dz.height - canvas.height * scale) / 2 };
  }

  function tile(level, col, row) {
    const key = `${level}/${col}_${row}`;
    let img = tiles.get(key);
    if (img === undefined) {
      img = new Image();
      pending++;
      img.onload = img.onerror = () => { pending--; draw(); };
      img.src = `${dz.base}${key}.${dz.format}`;
      tiles.set(key, img);
      if (tiles.size > 600) tiles.delete(tiles.keys().next().value);  // the oldest first
    } else {  // most recently used last
      tiles.delete(key); tiles.set(key, img);
    }
    return img;
  }

  function drawLevel(level) {
    const factor = 2 ** (dz.maxLevel - level);  // full-size pixels per pixel of this level
    const span = dz.tile * factor;
    const c0 = Math.max(0, Math.floor(view.x / span)), r0 = Math.max(0, Math.floor(view.y / span));
    const c1 = Math.min(Math.ceil(dz.width / span), Math.ceil((view.x + canvas.width * view.scale) / span));
    const r1 = Math.min(Math.ceil(dz.height / span), Math.ceil((view.y + canvas.height * view.scale) / span));
    let complete = true;
    for (let row = r0; row < r1; row++) {
      for (let col = c0; col < c1; col++) {
        const img = tile(level, col, row);
        if (!img.complete || !img.naturalWidth) { complete = false; continue; }
        ctx.drawImage(img, (col * span - view.x) / view.scale, (row * span - view.y) / view.scale,
                      img.naturalWidth * factor / view.scale, img.naturalHeight * factor / view.scale);
      }
    }
    return complete;
  }

  function draw() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    // the level whose pixels are no larger than the screen's
    const level = Math.max(0, Math.min(dz.maxLevel, Math.ceil(dz.maxLevel - Math.log2(Math.max(view.scale, 1e-9)))));
    if (level > 0) drawLevel(level - 1);
    const done = drawLevel(level);
    canvas.dataset.loaded = String(done && pending === 0);
  }

  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY }; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    view.x -= (e.clientX - drag.x) * view.scale; view.y -= (e.clientY - drag.y) * view.scale;
    drag = { x: e.clientX, y: e.clientY };
    draw();
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const factor = Math.exp(e.deltaY * 0.002);
    const px = e.offsetX * view.scale + view.x, py = e.offsetY * view.scale + view.y;
    view.scale = Math.min(Math.max(view.scale * factor, 1 / 8), 2 * Math.max(dz.width, dz.height));
    view.x = px - e.offsetX * view.scale; view.y = py - e.offsetY * view.scale;
    draw();
  }, { passive: false });
  canvas.addEventListener("dblclick", () => { fit(); draw(); });
  window.addEventListener("resize", () => { const s = view.scale, x = view.x, y = view.y; fit(); Object.assign(view, { scale: s, x, y }); draw(); });
  fit();
  draw();
  return { dz, view: () => ({ ...view }), redraw: draw };
}
