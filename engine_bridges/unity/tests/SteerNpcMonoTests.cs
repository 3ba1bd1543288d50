// Tests of the engine-agnostic Unity bridge (Runtime/Core) under Mono, against the real native
// library and a real `steernpc serve`. Built and run by tests/test_unity_csharp.py:
//
//   mcs -out:SteerNpcMonoTests.exe Runtime/Core/*.cs tests/SteerNpcMonoTests.cs
//   STEERNPC_TEST_TARGET=127.0.0.1:50051 STEERNPC_TEST_API_KEY=... LD_LIBRARY_PATH=<build> mono SteerNpcMonoTests.exe [name...]
//
// A tiny runner, no NUnit: each public static void Test* method is a test; named arguments run
// just those (also the harness-only ones without the Test prefix, e.g. OneRpcPerResult); the
// last line is "N passed, N failed" and the exit code is nonzero on any failure.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;

namespace SteerNpc.Tests
{
    internal class AssertionException : Exception
    {
        public AssertionException(string message) : base(message) { }
    }

    internal static class Assert
    {
        public static void True(bool condition, string what)
        {
            if (!condition) throw new AssertionException(what);
        }

        public static void Equal<T>(T expected, T actual, string what)
        {
            if (!EqualityComparer<T>.Default.Equals(expected, actual))
                throw new AssertionException(string.Format("{0}: expected <{1}>, got <{2}>", what, expected, actual));
        }

        public static SteerNpcException Throws(Action action, string what)
        {
            try { action(); }
            catch (SteerNpcException e) { return e; }
            throw new AssertionException(what + ": expected a SteerNpcException");
        }
    }

    public static class Program
    {
        static string Target { get { return Environment.GetEnvironmentVariable("STEERNPC_TEST_TARGET"); } }
        static string ApiKey { get { return Environment.GetEnvironmentVariable("STEERNPC_TEST_API_KEY") ?? ""; } }
        static string Character { get { return Environment.GetEnvironmentVariable("STEERNPC_TEST_CHARACTER") ?? "brom"; } }
        static string Mood { get { return Environment.GetEnvironmentVariable("STEERNPC_TEST_MOOD") ?? "angry"; } }

        static SteerNpcClient NewClient(string apiKey = null)
        {
            return new SteerNpcClient(new SteerNpcClientOptions
            {
                Target = Target, ApiKey = apiKey ?? ApiKey, DefaultDeadlineMs = 15000, MaxReconnectBackoffMs = 1000,
            });
        }

        // Pump like a game loop (Poll once per "frame") until the reply is finished.
        static void PumpUntil(SteerNpcClient client, Func<bool> done, int timeoutMs = 60000)
        {
            var sw = Stopwatch.StartNew();
            while (!done())
            {
                if (sw.ElapsedMilliseconds > timeoutMs) throw new AssertionException("timed out waiting for the reply");
                if (client.Poll() == 0) Thread.Sleep(2);
            }
        }

        static NpcReply SayAndWait(SteerNpcClient client, string session, string text, string overrides = null, int maxNewTokens = 12)
        {
            var reply = client.Say(session, text, new SayOptions { Attributes = overrides, MaxNewTokens = maxNewTokens });
            PumpUntil(client, () => reply.IsFinished);
            return reply;
        }

        // ---- tests ------------------------------------------------------------------------------

        public static void TestStructLayoutMatchesHeader()
        {
            if (IntPtr.Size != 8) return;
            Assert.Equal(72, Marshal.SizeOf(typeof(NativeMethods.Event)), "sizeof(npc_event)");
            Assert.Equal(40, (int)Marshal.OffsetOf(typeof(NativeMethods.Event), "text"), "offsetof(npc_event, text)");
            Assert.Equal(64, (int)Marshal.OffsetOf(typeof(NativeMethods.Event), "interactionId"), "offsetof(npc_event, interaction_id)");
            Assert.Equal(32, Marshal.SizeOf(typeof(NativeMethods.SayOptions)), "sizeof(npc_say_options)");
            Assert.Equal(48, Marshal.SizeOf(typeof(NativeMethods.ClientOptions)), "sizeof(npc_client_options)");
            Assert.Equal(40, Marshal.SizeOf(typeof(NativeMethods.SessionOptions)), "sizeof(npc_session_options)");
            // The harness passes pyproject.toml's version: the native library must carry it.
            string version = Environment.GetEnvironmentVariable("STEERNPC_TEST_VERSION");
            Assert.True(!string.IsNullOrEmpty(version), "STEERNPC_TEST_VERSION is set (tests/test_unity_csharp.py sets it)");
            Assert.Equal(version, SteerNpcClient.NativeVersion, "native version");
        }

        public static void TestListCharacters()
        {
            using (var client = NewClient())
            {
                List<NpcCharacterInfo> characters = client.ListCharacters();
                Assert.True(characters.Count > 0, "some characters");
                NpcCharacterInfo c = characters.FirstOrDefault(x => x.Id == Character);
                Assert.True(c != null, "character " + Character + " is listed");
                Assert.True(c.Name.Length > 0, "it has a name");
                Assert.True(c.Moods.Length > 0, "it has moods");
                Assert.True(c.Schema.Count >= 3, "it has a schema");
                Assert.True(c.Schema.All(s => s.Max > s.Min), "schema ranges");
                Console.WriteLine("    {0} characters; {1}: {2}, moods {3}", characters.Count, c.Id, c.Name, string.Join("/", c.Moods));
            }
        }

        public static void TestCreateSession()
        {
            using (var client = NewClient())
            {
                string id = client.CreateSession(Character, playerName: "Ada");
                Assert.True(id.Length > 0, "session id");
                var session = (Dictionary<string, object>)MiniJson.Parse(client.GetSessionJson(id));
                Assert.Equal(Character, (string)session["character_id"], "character_id");
                string chosen = "mono-" + Guid.NewGuid().ToString("N");
                Assert.Equal(chosen, client.CreateSession(Character, mood: Mood, sessionId: chosen), "client-chosen id");
                Assert.True(client.GetSessionJson(chosen).Contains("\"mood\":\"" + Mood + "\""), "mood set at creation");
                client.DeleteSession(id);
                var e = Assert.Throws(() => client.GetSessionJson(id), "deleted session");
                Assert.Equal(StatusCodes.NotFound, e.StatusCode, "status of a deleted session");
            }
        }

        // Say only hands the request to the core's thread and returns. Checked against a server
        // that accepts the connection and never answers: a Say that waited for anything from the
        // server could never return, and a Say that does not wait returns far within the bound,
        // however loaded the machine is.
        public static void TestSayDoesNotBlock()
        {
            var silent = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
            silent.Start();  // the kernel completes the TCP handshake; nothing ever speaks HTTP/2
            int port = ((System.Net.IPEndPoint)silent.LocalEndpoint).Port;
            try
            {
                using (var client = new SteerNpcClient(new SteerNpcClientOptions
                {
                    Target = "127.0.0.1:" + port, DefaultDeadlineMs = 600000, SayDeadlineMs = 600000,
                }))
                {
                    NpcReply reply = null;
                    var caller = new Thread(() => reply = client.Say("any-session", "Hello?", new SayOptions { MaxNewTokens = 4 }));
                    caller.Start();
                    Assert.True(caller.Join(30000), "Say returned while the server had not answered");
                    Assert.True(reply != null && !reply.IsFinished, "the reply is pending");
                    Assert.Equal(1, client.PendingReplies, "one reply pending");
                }  // Dispose cancels the pending call
            }
            finally { silent.Stop(); }
        }

        public static void TestSayStreamsDeltas()
        {
            using (var client = NewClient())
            {
                string session = client.CreateSession(Character);
                var deltas = new List<string>();
                NpcEvent done = null;
                int clientDeltas = 0;
                client.ReplyDelta += e => clientDeltas++;
                var sw = Stopwatch.StartNew();
                NpcReply reply = client.Say(session, "Hello! What do you sell?", new SayOptions { MaxNewTokens = 16 });
                double firstMs = -1;
                reply.Delta += e => { if (deltas.Count == 0) firstMs = sw.Elapsed.TotalMilliseconds; deltas.Add(e.Text); };
                reply.Done += e => done = e;
                reply.Error += e => { throw new AssertionException("error event: " + e.Text); };
                PumpUntil(client, () => reply.IsFinished);
                Assert.True(done != null, "done event");
                Assert.True(deltas.Count >= 2, "streamed deltas (" + deltas.Count + ")");
                Assert.Equal(deltas.Count, clientDeltas, "client-level delta events");
                Assert.Equal(string.Concat(deltas), done.Text, "deltas add up to the done text");
                Assert.Equal(done.Text, reply.Text, "reply.Text");
                Assert.True(done.FinishReason == FinishReason.Stop || done.FinishReason == FinishReason.Length, "finish reason");
                Assert.Equal(session, done.SessionId, "session id on the event");
                Assert.Equal(reply.Id, done.RequestId, "request id on the event");
                Assert.True(done.AppliedAttributes.ContainsKey("humor"), "applied attributes: " + done.Attributes);
                Assert.True(done.CompletionTokens > 0, "usage");
                Assert.Equal(0, client.PendingReplies, "nothing pending");
                Console.WriteLine("    {0} deltas, first after {1:F1} ms: \"{2}\"", deltas.Count, firstMs,
                                  done.Text.Length > 60 ? done.Text.Substring(0, 60) : done.Text);
                // Non-ASCII text round-trips through the UTF-8 marshalling.
                NpcReply r2 = SayAndWait(client, session, "Grüße, Schmied! Ça va? 你好");
                Assert.Equal(NpcEventType.Done, r2.Final.Type, "non-ASCII say: " + r2.Final.Text);
            }
        }

        public static void TestSteer()
        {
            using (var client = NewClient())
            {
                string session = client.CreateSession(Character);
                NpcReply before = SayAndWait(client, session, "Good morning.");
                Assert.Equal(NpcEventType.Done, before.Final.Type, "first reply");
                int humor = before.Final.AppliedAttributes["humor"] >= 3 ? 1 : 4;
                client.Steer(session, null, new Dictionary<string, int> { { "humor", humor }, { "verbosity", 3 } });
                NpcReply after = SayAndWait(client, session, "Tell me a joke.");
                Assert.Equal(humor, after.Final.AppliedAttributes["humor"], "steered humor");
                Assert.Equal(3, after.Final.AppliedAttributes["verbosity"], "steered verbosity");
                client.Steer(session, Mood, (string)null, true);
                NpcReply angry = SayAndWait(client, session, "Hello again.");
                var sessionAttrs = (Dictionary<string, object>)((Dictionary<string, object>)MiniJson.Parse(client.GetSessionJson(session)))["attributes"];
                Assert.Equal(AttributeString.Format(sessionAttrs.ToDictionary(kv => kv.Key, kv => Convert.ToInt32(kv.Value))),
                             angry.Final.Attributes, "clear dropped the steer: the reply gets the session's mood vector");
                // A per-reply override applies to that reply only.
                NpcReply over = SayAndWait(client, session, "Once more.", "humor:" + humor);
                Assert.Equal(humor, over.Final.AppliedAttributes["humor"], "per-reply override");
                Console.WriteLine("    before {0} | steered {1} | angry {2}", before.Final.Attributes, after.Final.Attributes, angry.Final.Attributes);
                var e = Assert.Throws(() => client.Steer(session, null, "no_such_attribute:1"), "unknown attribute");
                Assert.Equal(StatusCodes.InvalidArgument, e.StatusCode, "unknown attribute status");
                Assert.True(e.Message.Contains("no_such_attribute"), "message names the attribute: " + e.Message);
            }
        }

        public static void TestCancel()
        {
            using (var client = NewClient())
            {
                string session = client.CreateSession(Character);
                NpcReply reply = client.Say(session, "Tell me everything about Emberfall.",
                                            new SayOptions { MaxNewTokens = 4000, Temperature = 1.0f });
                bool asked = false;
                reply.Delta += e => { if (!asked && reply.DeltaCount >= 3) { asked = reply.Cancel(); } };
                PumpUntil(client, () => reply.IsFinished);
                Assert.True(asked, "Cancel() accepted");
                Assert.Equal(NpcEventType.Done, reply.Final.Type, "cancelled reply ends with done: " + reply.Final.Text);
                Assert.Equal(FinishReason.Cancelled, reply.Final.FinishReason, "finish reason");
                Assert.True(!client.Cancel(reply.Id), "cancelling a finished reply is refused");
                Console.WriteLine("    cancelled after {0} deltas", reply.DeltaCount);
            }
        }

        public static void TestErrors()
        {
            using (var client = NewClient())
            {
                var e = Assert.Throws(() => client.CreateSession("no-such-character"), "unknown character");
                Assert.Equal(StatusCodes.NotFound, e.StatusCode, "unknown character status");
                Assert.True(e.Message.Contains("no-such-character"), "message names the character: " + e.Message);

                NpcReply r = client.Say("no-such-session", "Hello?");
                NpcEvent error = null;
                r.Error += ev => error = ev;
                PumpUntil(client, () => r.IsFinished);
                Assert.True(error != null, "error event");
                Assert.Equal(StatusCodes.NotFound, error.StatusCode, "unknown session status");

                string session = client.CreateSession(Character);
                NpcReply bad = SayAndWait(client, session, "Hello", "humor:99");
                Assert.Equal(NpcEventType.Error, bad.Final.Type, "out-of-range override");
                Assert.Equal(StatusCodes.InvalidArgument, bad.Final.StatusCode, "out-of-range status");

                var syntax = Assert.Throws(() => client.Say(session, "Hello", "humor"), "unparsable overrides");
                Assert.Equal(StatusCodes.InvalidArgument, syntax.StatusCode, "unparsable overrides status");
            }
            if (ApiKey.Length > 0)
            {
                using (var wrong = NewClient("not-the-key"))
                {
                    var e = Assert.Throws(() => wrong.ListCharacters(), "wrong API key");
                    Assert.Equal(StatusCodes.Unauthenticated, e.StatusCode, "wrong key status");
                    Console.WriteLine("    {0}", e.Message);
                }
            }
            using (var down = new SteerNpcClient(new SteerNpcClientOptions { Target = "127.0.0.1:1", DefaultDeadlineMs = 3000 }))
            {
                var e = Assert.Throws(() => down.ListCharacters(), "no server");
                Assert.Equal(StatusCodes.Unavailable, e.StatusCode, "no server status");
                NpcReply r = down.Say("s", "anyone?");
                PumpUntil(down, () => r.IsFinished, 10000);
                Assert.Equal(StatusCodes.Unavailable, r.Final.StatusCode, "say with no server");
            }
        }

        public static void TestExportImport()
        {
            using (var client = NewClient())
            {
                string session = client.CreateSession(Character);
                client.Steer(session, Mood, "humor:3");
                SayAndWait(client, session, "My name is Ada.");
                byte[] snapshot = client.ExportSession(session);
                Assert.True(snapshot.Length > 0, "snapshot bytes");
                client.DeleteSession(session);
                string restored = client.ImportSession(snapshot);
                Assert.Equal(session, restored, "restored id");
                var s = (Dictionary<string, object>)MiniJson.Parse(client.GetSessionJson(restored));
                Assert.Equal(1, Convert.ToInt32(s["turns"]), "turns survive");
                Assert.Equal(Mood, (string)s["mood"], "mood survives");
                NpcReply r = SayAndWait(client, restored, "Remember me?");
                Assert.Equal(3, r.Final.AppliedAttributes["humor"], "steer survives");
                Console.WriteLine("    snapshot {0} bytes", snapshot.Length);
            }
        }

        public static void TestPollEventsAndDispose()
        {
            var client = NewClient();
            string session = client.CreateSession(Character);
            NpcReply reply = client.Say(session, "Hi.", new SayOptions { MaxNewTokens = 8 });
            var all = new List<NpcEvent>();
            var sw = Stopwatch.StartNew();
            while (!reply.IsFinished && sw.ElapsedMilliseconds < 60000)
            {
                all.AddRange(client.PollEvents());
                Thread.Sleep(2);
            }
            Assert.True(all.Count >= 2 && all.Last().Type == NpcEventType.Done, "PollEvents returns the events");
            // Dispose with a reply in flight: no hang, no crash; using it afterwards throws.
            client.Say(session, "Talk for a long time.", new SayOptions { MaxNewTokens = 4000 });
            Thread.Sleep(50);
            client.Dispose();
            client.Dispose();
            Assert.True(client.IsDisposed, "disposed");
            bool threw = false;
            try { client.Poll(); } catch (ObjectDisposedException) { threw = true; }
            Assert.True(threw, "use after Dispose throws ObjectDisposedException");
        }

        // Run by name against the harness's counting server (counting_servicer in
        // tests/test_native_bridge.py), not `steernpc serve`: its answers are far longer than any
        // buffer a caller would guess. Each call is made once; the harness checks that the server
        // saw exactly one RPC per call.
        public static void OneRpcPerResult()
        {
            using (var client = NewClient())
            {
                List<NpcCharacterInfo> characters = client.ListCharacters();
                Assert.Equal(1, characters.Count, "one character");
                const string hello = "Grüße, Reisender! ";
                Assert.Equal(hello.Length * 8000, characters[0].Greeting.Length, "the whole greeting");
                Assert.True(characters[0].Greeting.StartsWith(hello) && characters[0].Greeting.EndsWith(hello), "UTF-8 intact");
                string session = client.CreateSession("long");
                Assert.Equal(3000, session.Length, "a 3000-byte session id");
                string json = client.GetSessionJson(session);
                Assert.True(json.Length > 100000 && json.Contains(session), "the whole session JSON (" + json.Length + " chars)");
                byte[] snapshot = client.ExportSession(session);
                Assert.Equal(1 << 20, snapshot.Length, "snapshot size");
                for (int i = 0; i < snapshot.Length; i++)
                    if (snapshot[i] != i % 251) throw new AssertionException("snapshot byte " + i + " is " + snapshot[i]);
                Assert.Equal(session, client.ImportSession(snapshot), "restored id");
                Console.WriteLine("    greeting {0} chars, session id {1}, session {2} chars, snapshot {3} bytes: one call each",
                                  characters[0].Greeting.Length, session.Length, json.Length, snapshot.Length);
            }
        }

        // ---- runner -------------------------------------------------------------------------------

        public static int Main(string[] args)
        {
            if (string.IsNullOrEmpty(Target))
            {
                Console.WriteLine("STEERNPC_TEST_TARGET is not set (host:port of a running steernpc serve)");
                return 2;
            }
            var tests = typeof(Program).GetMethods(BindingFlags.Public | BindingFlags.Static)
                .Where(m => m.GetParameters().Length == 0)
                .Where(m => args.Length == 0 ? m.Name.StartsWith("Test") : args.Contains(m.Name))
                .OrderBy(m => m.MetadataToken)
                .ToList();
            int passed = 0, failed = 0;
            foreach (MethodInfo test in tests)
            {
                var sw = Stopwatch.StartNew();
                try
                {
                    test.Invoke(null, null);
                    passed++;
                    Console.WriteLine("PASS {0} ({1} ms)", test.Name, sw.ElapsedMilliseconds);
                }
                catch (TargetInvocationException e)
                {
                    failed++;
                    Console.WriteLine("FAIL {0} ({1} ms): {2}", test.Name, sw.ElapsedMilliseconds, e.InnerException);
                }
            }
            Console.WriteLine("{0} passed, {1} failed", passed, failed);
            return failed == 0 && passed > 0 ? 0 : 1;
        }
    }
}
