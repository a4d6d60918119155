"""Native unit tests of `ioc.py`: `python3 -m unittest` in this directory (no WebAssembly, no bindings)."""

import unittest

import ioc


class Refang(unittest.TestCase):
    def test_common_forms(self):
        cases = {
            "hxxp://evil[.]com/a": "http://evil.com/a",
            "hXXps[:]//evil(.)com": "https://evil.com",
            "hxxp[://]evil.com": "http://evil.com",
            "evil[dot]example{.}org": "evil.example.org",
            "evil (dot) com": "evil.com",
            "1.2.3[.]4": "1.2.3.4",
            "evil\\.com": "evil.com",
            "user[@]example[.]com": "user@example.com",
            "user [at] example[.]com": "user@example.com",
            "fxp://files[.]example[.]com": "ftp://files.example.com",
            "2001:db8[:]:1": "2001:db8::1",
        }
        for defanged, expected in cases.items():
            with self.subTest(defanged=defanged):
                self.assertEqual(ioc.refang(defanged)[0], expected)

    def test_counts_replacements(self):
        self.assertEqual(ioc.refang("hxxp://a[.]b[.]c"), ("http://a.b.c", 3))
        self.assertEqual(ioc.refang("nothing here"), ("nothing here", 0))


class Extract(unittest.TestCase):
    def test_everything_in_order_and_deduplicated(self):
        text = (
            "Seen 10.0.0[.]5, then 192.0.2.1 and 10.0.0.5 again. Contact soc@Example.COM or "
            "hxxps://bad[.]example[.]com/x?a=1). IPv6 [2001:DB8::1] and fe80::1%eth0. "
            "Hashes D41D8CD98F00B204E9800998ECF8427E, da39a3ee5e6b4b0d3255bfef95601890afd80709, "
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855."
        )
        out = ioc.extract(text)
        self.assertEqual(out["ipv4"], ["10.0.0.5", "192.0.2.1"])
        self.assertEqual(out["ipv6"], ["2001:db8::1", "fe80::1"])
        self.assertEqual(out["domains"], ["example.com", "bad.example.com"])
        self.assertEqual(out["urls"], ["https://bad.example.com/x?a=1"])
        self.assertEqual(out["emails"], ["soc@example.com"])
        self.assertEqual(out["md5"], ["d41d8cd98f00b204e9800998ecf8427e"])
        self.assertEqual(out["sha1"], ["da39a3ee5e6b4b0d3255bfef95601890afd80709"])
        self.assertEqual(out["sha256"], ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"])
        self.assertFalse(out["truncated"])

    def test_only_requested_types(self):
        out = ioc.extract("1.2.3.4 example.com", ["ipv4"])
        self.assertEqual(out, {"ipv4": ["1.2.3.4"], "truncated": False})

    def test_not_indicators(self):
        out = ioc.extract(
            "Version 1.2.3.4.5, 999.1.1.1, time 12:30:45, MAC 00:1a:2b:3c:4d:5e, invoice.pdf, run.exe, "
            "e.g. this, http://intranet/, a hash-like 0123456789abcdef0123456789abcdef0 (33 digits)."
        )
        for key in ioc.TYPES:
            self.assertEqual(out[key], [], key)

    def test_url_punctuation(self):
        out = ioc.extract("See (http://example.com/a_(b)) and <https://example.org/>.", ["urls"])
        self.assertEqual(out["urls"], ["http://example.com/a_(b)", "https://example.org/"])

    def test_limit_truncates(self):
        out = ioc.extract("1.1.1.1 2.2.2.2 3.3.3.3 1.1.1.1", ["ipv4"], limit=2)
        self.assertEqual(out, {"ipv4": ["1.1.1.1", "2.2.2.2"], "truncated": True})
        out = ioc.extract("1.1.1.1 2.2.2.2 1.1.1.1", ["ipv4"], limit=2)
        self.assertFalse(out["truncated"])

    def test_bad_input(self):
        with self.assertRaises(ioc.InvalidInput):
            ioc.extract("x" * (ioc.MAX_TEXT_BYTES + 1))
        with self.assertRaises(ioc.InvalidInput):
            ioc.extract("é" * (ioc.MAX_TEXT_BYTES // 2 + 1))  # 2 bytes each: over the limit in bytes
        with self.assertRaises(ioc.InvalidInput):
            ioc.extract("x", ["cve"])
        with self.assertRaises(ioc.InvalidInput):
            ioc.extract("x", limit=0)
        self.assertEqual(ioc.extract("x" * ioc.MAX_TEXT_BYTES, ["md5"]), {"md5": [], "truncated": False})


if __name__ == "__main__":
    unittest.main()
