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
 *     - wasm: { name: misbehave, path: plugins/build/misbehave_js.wasm }
 */

import { Plugin, serve } from 'synapsor-plugin';

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
}

export const { init, onRequest, onResponse, onRequestMessage, onResponseMessage } = serve(Misbehave);
