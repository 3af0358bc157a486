/**
 * misbehave (JavaScript): a plugin for the gateway's safety tests. It lets every call through
 * unchanged unless the request's `x-misbehave` entry asks it to fail in one particular way:
 *
 * - `loop`: spins forever (the hook's CPU `timeout` must stop it);
 * - `alloc`: allocates 1 MiB buffers, all kept and touched, until memory runs out (the
 *   plugin's memory limit must stop it);
 * - `throw`: throws an Error (the SDK logs it with its stack, then the instance traps);
 * - `recurse`: recurses without bound (SpiderMonkey's "too much recursion", or the stack's
 *   end, stops it).
 *
 * Its request-message hook reads field 1 of each message (the testkit's `EchoRequest.payload`):
 * `replace-me` is replaced by a message whose field 1 is `replaced`, `reject-me` refused with
 * OUT_OF_RANGE, `throw` throws.
 *
 *     - wasm: { name: misbehave, path: plugins/build/misbehave_js.wasm }
 */

import { Code, Plugin, Reject, Replace, serve, wire } from 'synapsor-plugin';

const text = new TextDecoder();

/** Goes deeper until something stops it; the sum keeps it from being a tail call. */
function recurse(n) {
    return recurse(n + 1) + 1;
}

class Misbehave extends Plugin {
    onRequest(req) {
        switch (req.header('x-misbehave')) {
            case 'loop': {
                let i = 0;
                for (;;) i = (i + 1) | 0;
            }
            case 'alloc': {
                const kept = [];
                for (;;) kept.push(new Uint8Array(1 << 20).fill(7));
            }
            case 'throw':
                throw new Error('asked to throw');
            case 'recurse':
                return recurse(0);
            default:
                return undefined;
        }
    }

    onRequestMessage(msg) {
        let payload = new Uint8Array();
        for (const [number, wireType, value] of wire.fields(msg.data)) {
            if (number === 1 && wireType === wire.LEN) payload = value;
        }
        switch (text.decode(payload)) {
            case 'replace-me':
                return new Replace(new wire.Writer().string(1, 'replaced').finish());
            case 'reject-me':
                throw new Reject(Code.OUT_OF_RANGE, `message ${msg.index} refused`);
            case 'throw':
                throw new Error('asked to throw in a message hook');
            default:
                return undefined;
        }
    }
}

export const { init, onRequest, onResponse, onRequestMessage, onResponseMessage } = serve(Misbehave);
