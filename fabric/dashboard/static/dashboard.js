// fabric dashboard: the little JavaScript the pages use, hand-written, no build step.
// Every page works without it except the image upload; with it, lists update in
// place, uploads show progress, and destructive forms ask first.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // --- live updates ---------------------------------------------------------
  // The server decides how long to wait (next_ms): it backs off while nothing
  // changes and never lets a session list more than once per few seconds.
  function poll(element) {
    var url = element.getAttribute("data-poll");
    var fingerprint = element.getAttribute("data-fingerprint") || "";
    var interval = parseInt(element.getAttribute("data-interval"), 10) || 3000;
    var maxInterval = 15000;
    var timer = null;

    function schedule(ms) {
      clearTimeout(timer);
      timer = setTimeout(tick, ms);
    }

    function apply(doc) {
      if (doc.rows_html !== undefined) {
        var body = element.querySelector("[data-rows]");
        if (body) { body.innerHTML = doc.rows_html; }  // rendered and escaped by the server
      }
      ["status", "task", "addresses", "console"].forEach(function (name) {
        if (doc[name] === undefined) { return; }
        var target = element.querySelector('[data-field="' + name + '"]');
        if (target) {
          target.textContent = doc[name];
          if (name === "status") { target.className = "status status-" + String(doc[name]).toLowerCase(); }
        }
      });
    }

    function tick() {
      if (document.hidden) { return; }  // resumed by visibilitychange
      var query = "?since=" + encodeURIComponent(fingerprint) + "&interval=" + interval;
      fetch(url + query, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}})
        .then(function (response) {
          if (response.status === 401) {
            return response.json().then(function (doc) { window.location.assign(doc.login); });
          }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json().then(function (doc) {
            if (doc.changed) { apply(doc); }
            fingerprint = doc.fingerprint;
            element.setAttribute("data-fingerprint", fingerprint);
            interval = doc.next_ms;
            element.setAttribute("data-interval", String(interval));
            schedule(interval);
          });
        })
        .catch(function () {
          interval = maxInterval;
          schedule(interval);
        });
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) { schedule(0); }
    });
    schedule(interval);
  }

  // --- image upload with progress -------------------------------------------
  function upload(form) {
    var progress = form.querySelector("progress");
    var errorBox = document.getElementById("upload-error");

    function fail(message) {
      errorBox.textContent = message;
      errorBox.hidden = false;
      form.querySelector("button[type=submit]").disabled = false;
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var file = form.querySelector("input[type=file]").files[0];
      if (!file) { fail("Choose a file to upload."); return; }
      errorBox.hidden = true;
      form.querySelector("button[type=submit]").disabled = true;
      var fields = new URLSearchParams();
      fields.set("csrf_token", csrfToken());
      fields.set("name", form.querySelector("[name=name]").value);
      fields.set("disk_format", form.querySelector("[name=disk_format]").value);
      fetch(form.action, {method: "POST", credentials: "same-origin", body: fields,
                          headers: {"X-Requested-With": "fetch"}})
        .then(function (response) {
          return response.json().then(function (doc) {
            if (!response.ok) { throw new Error(doc.error || ("HTTP " + response.status)); }
            return doc;
          });
        })
        .then(function (created) {
          var xhr = new XMLHttpRequest();
          xhr.open("PUT", created.upload);
          xhr.setRequestHeader("X-CSRF-Token", csrfToken());
          xhr.setRequestHeader("Content-Type", "application/octet-stream");
          xhr.upload.addEventListener("progress", function (e) {
            if (!e.lengthComputable) { return; }
            var pct = Math.floor(100 * e.loaded / e.total);
            progress.value = pct;
          });
          xhr.addEventListener("load", function () {
            if (xhr.status >= 200 && xhr.status < 300) {
              progress.value = 100;
              form.setAttribute("data-uploaded", created.id);
              window.location.reload();
            } else {
              var message = "Upload failed (HTTP " + xhr.status + ")";
              try { message = JSON.parse(xhr.responseText).error || message; } catch (ignored) { /* not JSON */ }
              fail(message);
            }
          });
          xhr.addEventListener("error", function () { fail("The upload was interrupted."); });
          xhr.send(file);
        })
        .catch(function (err) { fail(err.message); });
    });
  }

  // --- confirmation for destructive forms -----------------------------------
  function confirmFirst(form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
    document.querySelectorAll("form[data-upload]").forEach(upload);
    document.querySelectorAll("form[data-confirm]").forEach(confirmFirst);
  });
}());
