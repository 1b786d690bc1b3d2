// Drives a Snakemake report (a React app with no URL state) the way a reader clicks through it, for
// tests/test_workflow.py::test_report_renders_in_a_browser. Appended to a copy of report.html; the test
// replaces __FINAL__ with the result to leave on screen (for a screenshot). Once the app has rendered,
// it opens every result's page (labels, rendered caption, rule), records what the page shows, ends on
// __FINAL__ with the result itself in the content pane, and writes the record as JSON into a hidden
// pre element (id unmasking-test-dump) for `chromium --dump-dom`.
"use strict";
window.addEventListener("load", function () {
    const FINAL = __FINAL__;
    const WAIT_MS = 200; // one React render (virtual time under --virtual-time-budget)
    const record = { menu: null, results: {}, claims_html: null, final_image_width: null };
    const paths = Object.keys(results);
    const captionElement = () => document.querySelector("#app .prose-invert");

    function decode(dataUri) {
        const bytes = atob(dataUri.slice(dataUri.indexOf(",") + 1));
        return new TextDecoder().decode(Uint8Array.from(bytes, (c) => c.charCodeAt(0)));
    }

    function show(path) {
        // app.showResultInfo(path) and the result's view button in one state change (setView reads the
        // state, which React updates after the call)
        const result = results[path];
        app.setView({
            navbarMode: "resultinfo",
            resultPath: path,
            content: result.mime_type === "text/html" ? "html" : "img",
            contentPath: result.data_uri,
        });
    }

    function visit(i) {
        if (i > 0) {
            const caption = captionElement();
            record.results[paths[i - 1]] = {
                page_text: document.querySelector("#app").innerText,
                caption_html: caption ? caption.innerHTML : null,
            };
        }
        if (i < paths.length) {
            show(paths[i]);
            setTimeout(() => visit(i + 1), WAIT_MS);
            return;
        }
        show(FINAL);
        setTimeout(finish, WAIT_MS);
    }

    function finish() {
        const image = document.querySelector("#app img[src^='data:image/png']");
        record.final_image_width = image ? image.naturalWidth : null;
        for (const path of paths) {
            if (results[path].mime_type === "text/html") record.claims_html = decode(results[path].data_uri);
        }
        const pre = document.createElement("pre");
        pre.id = "unmasking-test-dump";
        pre.style.display = "none";
        pre.textContent = JSON.stringify(record);
        document.body.appendChild(pre);
    }

    setTimeout(function () {
        record.menu = document.querySelector("#app").innerText;
        visit(0);
    }, WAIT_MS);
});
