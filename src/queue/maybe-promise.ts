/**
 * A store's answer: the value itself (bun:sqlite, synchronous) or a Promise of it (a database on a
 * server). Callers look before they await: awaiting a plain value still costs a microtask turn, and the
 * job runner's path from one job's end to the next job's send is measured to the microsecond (#21).
 */
export type MaybePromise<T> = T | Promise<T>;

/** Whether the store answered with a Promise (an async store's methods return native Promises). */
export function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return value instanceof Promise;
}

/** `then(value)` now when the value is here, or once it resolves; a rejection passes through. */
export function after<T, R>(value: MaybePromise<T>, then: (value: T) => MaybePromise<R>): MaybePromise<R> {
  return isPromise(value) ? value.then(then) : then(value);
}

/** The values, now when every one is here, or once every Promise among them resolves (Promise.all). */
export function allOf<T>(values: readonly MaybePromise<T>[]): MaybePromise<T[]> {
  return values.some(isPromise) ? Promise.all(values) : (values as T[]);
}

/**
 * The value of a store known to be synchronous (bun:sqlite): for the parts that run on SQLite alone so far
 * (the dashboard's snapshot). A Promise here is a wiring mistake, said at once rather than rendered.
 */
export function present<T>(value: MaybePromise<T>, reader: string): T {
  if (isPromise(value)) throw new Error(`${reader} reads a synchronous store (SQLite) only`);
  return value;
}
