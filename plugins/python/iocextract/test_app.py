"""Native tests of `app.py` through the JSON boundary, as the host calls it.

They need the generated bindings on the path (the `wit_world` package), which stand in for the host natively:

    componentize-py -d ../../../wit -d wit -w iocextract bindings bindings
    PYTHONPATH=bindings python3 -m unittest

Natively the bindings' imports raise `NotImplementedError`, so these tests replace `log.log` with a list.
"""

import json
import unittest

from componentize_py_types import Err
from wit_world.imports import log, types

import app

CONTEXT = types.InvocationContext(run_id="test", step_id="test", attempt=1, idempotency_key="test")


class App(unittest.TestCase):
    def setUp(self):
        self.logged = []
        self._log = log.log
        log.log = lambda level, message: self.logged.append((level, message))

    def tearDown(self):
        log.log = self._log

    def invoke(self, action, value):
        return json.loads(app.WitWorld().invoke(action, json.dumps(value), CONTEXT))

    def error(self, action, text):
        with self.assertRaises(Err) as caught:
            app.WitWorld().invoke(action, text, CONTEXT)
        return caught.exception.value

    def test_manifest_and_examples(self):
        manifest = app.WitWorld().describe()
        self.assertEqual((manifest.name, manifest.vendor), ("iocextract", "Qila"))
        self.assertEqual([a.name for a in manifest.actions], ["extract", "refang"])
        for action in manifest.actions:
            schema = json.loads(action.input_schema)
            self.assertFalse(schema["additionalProperties"])
            self.assertTrue(action.summary)
            self.invoke(action.name, json.loads(action.example_input))

    def test_extract_logs(self):
        out = self.invoke("extract", {"text": "1.2.3[.]4", "types": ["ipv4"]})
        self.assertEqual(out, {"ipv4": ["1.2.3.4"], "truncated": False})
        self.assertEqual(self.logged, [(log.Level.DEBUG, "extract: 1 indicator(s) (attempt 1)")])

    def test_typed_errors(self):
        self.assertIsInstance(self.error("nope", "{}"), types.Error_NotFound)
        self.assertIsInstance(self.error("extract", "not json"), types.Error_InvalidInput)
        self.assertIsInstance(self.error("extract", '{"txt": "a"}'), types.Error_InvalidInput)
        self.assertIsInstance(self.error("refang", "[]"), types.Error_InvalidInput)
        e = self.error("extract", json.dumps({"text": "x" * ((1 << 20) + 1)}))
        self.assertIsInstance(e, types.Error_InvalidInput)
        self.assertIn("1 MiB", e.value)


if __name__ == "__main__":
    unittest.main()
