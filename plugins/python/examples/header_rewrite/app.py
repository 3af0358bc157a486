"""header-rewrite (Python): sets, appends and removes request metadata before a call is
forwarded, and sets trailers on its answer; the same plugin as the Rust example.

    - wasm: { name: header-rewrite, path: plugins/build/header_rewrite_py.wasm,
              config: { set: { x-env: prod }, append: { x-via: synapsor },
                        remove: [x-debug], trailers: { x-served-by: synapsor } } }
"""

from synapsor_plugin import Plugin, append_header, export, remove_header, set_header, settings


class HeaderRewrite(Plugin):
    def __init__(self, config):
        c = settings(config, set={}, append={}, remove=[], trailers={})
        self.request = [remove_header(n) for n in c.remove]
        self.request += [set_header(k, v) for k, v in sorted(c.set.items())]
        self.request += [append_header(k, v) for k, v in sorted(c.append.items())]
        self.response = [set_header(k, v) for k, v in sorted(c.trailers.items())]

    def on_request(self, req):
        return self.request

    def on_response(self, resp):
        return self.response


WitWorld = export(HeaderRewrite)
