/**
 * header-rewrite (JavaScript): sets, appends and removes request metadata before a call is
 * forwarded, and sets trailers on its answer; the same plugin as the Rust example.
 *
 *     - wasm: { name: header-rewrite, path: plugins/build/header_rewrite_js.wasm,
 *               config: { set: { x-env: prod }, append: { x-via: synapsor },
 *                         remove: [x-debug], trailers: { x-served-by: synapsor } } }
 */

import { Plugin, appendHeader, removeHeader, serve, setHeader, settings } from 'synapsor-plugin';

/** The entries of a map sorted by name (code point order, as Python's `sorted`). */
const sorted = (map) => Object.entries(map).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

class HeaderRewrite extends Plugin {
    constructor(config) {
        super(config);
        const c = settings(config, { set: {}, append: {}, remove: [], trailers: {} });
        this.request = [
            ...c.remove.map((n) => removeHeader(n)),
            ...sorted(c.set).map(([k, v]) => setHeader(k, v)),
            ...sorted(c.append).map(([k, v]) => appendHeader(k, v)),
        ];
        this.response = sorted(c.trailers).map(([k, v]) => setHeader(k, v));
    }

    onRequest() {
        return this.request;
    }

    onResponse() {
        return this.response;
    }
}

export const { init, onRequest, onResponse, onRequestMessage, onResponseMessage } = serve(HeaderRewrite);
