// The Host check's parsing and rule, case by case; test/e2e/host-check.test.ts drives it through the binary.
import { describe, expect, test } from "bun:test";
import { HostPolicy, hostName, isLocalHostName } from "../../src/http/host-check";

describe("hostName", () => {
  test("the name without port or trailing dot, lowercased; undefined for anything else", () => {
    expect(hostName("LocalHost:8080")).toBe("localhost");
    expect(hostName("localhost.")).toBe("localhost");
    expect(hostName("[::1]:8080")).toBe("::1");
    expect(hostName("127.0.0.1")).toBe("127.0.0.1");
    for (const bad of ["", "a, b", "a/b", "u@h", "h:port", "h:123456", "::1", "[evil.example]", "h h"])
      expect(hostName(bad)).toBeUndefined();
  });
});

describe("isLocalHostName", () => {
  test("localhost, *.localhost and local IP literals; no DNS name", () => {
    for (const name of [
      "localhost",
      "app.localhost",
      "127.0.0.1",
      "127.255.0.9",
      "::1",
      "::ffff:127.0.0.1",
      "0.0.0.0",
      "::",
      "10.1.2.3",
      "172.16.0.1",
      "192.168.1.1",
      "fd00::1",
    ])
      expect([name, isLocalHostName(name)]).toEqual([name, true]);
    for (const name of [
      "evil.example",
      "localhost.evil.example",
      "127.0.0.1.nip.io",
      "8.8.8.8",
      "172.32.0.1",
      "2001:db8::1",
      "localhostx",
    ])
      expect([name, isLocalHostName(name)]).toEqual([name, false]);
  });
});

describe("HostPolicy", () => {
  test("loopback listen: local names and the list; other listens: any unless a list is given", () => {
    const loopback = new HostPolicy([], true);
    expect(loopback.allows("evil.example")).toBe(false);
    expect(loopback.allows("localhost:1")).toBe(true);
    expect(loopback.allows(null)).toBe(true);
    const listed = new HostPolicy(["Foreman.Example.com", "*.lan", "[2001:db8::1]"], true);
    for (const host of ["foreman.example.com:80", "gpu.lan", "[2001:db8::1]:8080"]) expect(listed.allows(host)).toBe(true);
    for (const host of ["lan", "evil.example", "example.com"]) expect(listed.allows(host)).toBe(false);
    expect(new HostPolicy([], false).allows("evil.example")).toBe(true);
    expect(new HostPolicy(["foreman.example.com"], false).allows("evil.example")).toBe(false);
    expect(new HostPolicy(["*"], true).allows("evil.example")).toBe(true);
  });
});
