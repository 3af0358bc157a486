/**
 * Metrics on the gateway's `/metrics`, exported as `synapsor_wasm_<name>` with the label
 * `plugin` added. Define them in the plugin's constructor (every instance does; the gateway
 * hands back the same metric). Errors (a bad name or labels, a clash) throw an `Error`
 * `metric <name>: <why>`.
 *
 * ```js
 * this.calls = new metrics.Counter('tenant_calls', 'Calls by tenant', ['tenant']);
 * this.calls.inc([tenant]);
 * ```
 *
 * @module synapsor-plugin/metrics
 */

import * as host from 'synapsor:plugin/host@0.2.1';

function define(name, help, kind, labels, buckets = []) {
    try {
        return host.defineMetric({
            name, help, kind, labels: Array.from(labels), buckets: Array.from(buckets, Number),
        });
    } catch (e) {
        if (e !== null && typeof e === 'object' && Object.prototype.hasOwnProperty.call(e, 'payload')) {
            throw new Error(`metric ${name}: ${e.payload}`);
        }
        throw e;
    }
}

/** A counter (exported with `_total`): it only goes up. */
export class Counter {
    /**
     * @param {string} name 1 to 64 characters of `[a-z0-9_]`, not starting with a digit
     * @param {string} help the HELP text (at most 256 bytes)
     * @param {string[]} [labels] its label names (at most 8; not `plugin`)
     * @throws {Error} when the gateway refuses the definition
     */
    constructor(name, help, labels = []) {
        /** The gateway's id of the metric. @type {number} */
        this.id = define(name, help, 'counter', labels);
    }

    /**
     * Adds `by` (0 or more) to the series with these label values.
     *
     * @param {string[]} [labels] the label values, in the order of the label names
     * @param {number} [by] 1 by default
     * @returns {void}
     */
    inc(labels = [], by = 1) {
        host.metricAdd(this.id, labels, Number(by));
    }
}

/** A gauge: it goes up and down. */
export class Gauge {
    /**
     * @param {string} name as for {@link Counter}
     * @param {string} help the HELP text
     * @param {string[]} [labels] its label names
     * @throws {Error} when the gateway refuses the definition
     */
    constructor(name, help, labels = []) {
        /** @type {number} */
        this.id = define(name, help, 'gauge', labels);
    }

    /**
     * Sets the series with these label values.
     *
     * @param {string[]} labels the label values
     * @param {number} value
     * @returns {void}
     */
    set(labels, value) {
        host.metricSet(this.id, labels, Number(value));
    }

    /**
     * Adds `value` (negative to subtract) to the series with these label values.
     *
     * @param {string[]} labels the label values
     * @param {number} value
     * @returns {void}
     */
    add(labels, value) {
        host.metricAdd(this.id, labels, Number(value));
    }
}

/** A histogram: counts observations into buckets. */
export class Histogram {
    /**
     * @param {string} name as for {@link Counter}
     * @param {string} help the HELP text
     * @param {string[]} [labels] its label names (not `le`)
     * @param {number[]} [buckets] increasing bucket bounds (at most 32); empty for the default
     *     (0.005 to 10, Prometheus' defaults)
     * @throws {Error} when the gateway refuses the definition
     */
    constructor(name, help, labels = [], buckets = []) {
        /** @type {number} */
        this.id = define(name, help, 'histogram', labels, buckets);
    }

    /**
     * Records `value` in the series with these label values.
     *
     * @param {string[]} labels the label values
     * @param {number} value
     * @returns {void}
     */
    observe(labels, value) {
        host.metricObserve(this.id, labels, Number(value));
    }
}
