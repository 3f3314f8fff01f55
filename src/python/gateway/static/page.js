// The page's behaviour: send a URL (JSON) or a file (multipart) to /v1/classify, draw the bars.
// Plain DOM code, no libraries: the page must work with nothing loaded from elsewhere.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const urlForm = $("url-form"), urlInput = $("url"), urlButton = $("url-submit");
  const drop = $("drop"), fileInput = $("file");
  const statusLine = $("status"), errorBox = $("error");
  const result = $("result"), preview = $("preview"), chart = $("chart");
  const verdict = $("verdict"), details = $("details"), untrained = $("untrained");
  let previewUrl = null;  // object URL of the last chosen file, revoked when replaced
  let busy = false;

  // Words for the gateway's error codes; the server's own message follows them.
  const ERROR_WORDS = {
    bad_request: "That request could not be understood.",
    url_not_allowed: "That address cannot be fetched.",
    too_large: "The image is too large.",
    not_an_image: "That file is not an image the model can read.",
    unreadable_image: "The image is damaged or cannot be decoded.",
    image_host_failed: "The image could not be downloaded.",
    image_host_timeout: "The image's website took too long to answer.",
    overloaded: "The service is busy. Please try again in a moment.",
    model_unavailable: "The model is not available right now. Please try again shortly.",
    deadline_exceeded: "The model took too long to answer. Please try again.",
    model_error: "The model could not handle this request.",
  };

  function setBusy(on, message) {
    busy = on;
    urlButton.disabled = on;
    fileInput.disabled = on;
    statusLine.textContent = message || "";
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
    result.hidden = true;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }

  function percent(p) {
    const v = p * 100;
    return (v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1)) + "%";
  }

  function render(body) {
    const probs = Object.entries(body.probabilities).sort((a, b) => b[1] - a[1]);
    chart.replaceChildren();
    for (const [label, p] of probs) {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "label";
      name.textContent = label;
      const track = document.createElement("span");
      track.className = "track";
      track.setAttribute("aria-hidden", "true");
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = (p * 100).toFixed(2) + "%";
      track.appendChild(bar);
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = percent(p);
      li.append(name, track, pct);
      chart.appendChild(li);
    }
    const [best, bestP] = probs[0];
    verdict.textContent = "Most likely: " + best + " (" + percent(bestP) + ")";
    const t = body.timings_ms || {};
    const model = body.model || {};
    // Only a model whose description says so: a gateway not given the description says nothing.
    untrained.hidden = model.trained !== false;
    details.textContent = "Model " + (model.name || "?") + (model.version != null ? " v" + model.version : "") +
      " · " + Math.round(t.total || 0) + " ms (model " + Math.round(t.predict || 0) + " ms)";
    result.hidden = false;
  }

  // The preview is shown with the result (a failed URL is never loaded by the page).
  async function classify(request, what, previewSrc) {
    if (busy) return;
    clearError();
    setBusy(true, "Classifying " + what + "…");
    try {
      const response = await fetch("/v1/classify?top_k=3", request);
      let body = null;
      try { body = await response.json(); } catch (_) { body = null; }
      if (!response.ok) {
        const err = (body && body.error) || {};
        const words = ERROR_WORDS[err.code] || "Something went wrong (HTTP " + response.status + ").";
        showError(words + (err.message ? " " + err.message.charAt(0).toUpperCase() + err.message.slice(1) + "." : ""));
        setBusy(false, "");
        return;
      }
      preview.src = previewSrc;
      render(body);
      setBusy(false, "Done.");
    } catch (e) {
      showError("The gateway could not be reached. Check your connection and try again.");
      setBusy(false, "");
    }
  }

  urlForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const url = urlInput.value.trim();
    if (!url) {
      showError("Enter the address of an image first.");
      urlInput.focus();
      return;
    }
    classify({
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ url: url }),
    }, "the image at that address", url);
  });

  function sendFile(file) {
    if (!file) return;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    const form = new FormData();
    form.append("image", file, file.name);
    classify({ method: "POST", body: form }, file.name || "the file", previewUrl);
  }

  fileInput.addEventListener("change", () => sendFile(fileInput.files[0]));

  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) sendFile(files[0]);
  });
  // A file dropped outside the zone would make the browser navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
})();
