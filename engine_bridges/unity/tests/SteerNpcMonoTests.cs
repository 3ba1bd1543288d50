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
            Assert.Equal(104, Marshal.SizeOf(typeof(NativeMethods.EventEx)), "sizeof(npc_event_ex)");
            Assert.Equal(72, (int)Marshal.OffsetOf(typeof(NativeMethods.EventEx), "sceneId"), "offsetof(npc_event_ex, scene_id)");
            Assert.Equal(96, (int)Marshal.OffsetOf(typeof(NativeMethods.EventEx), "line"), "offsetof(npc_event_ex, line)");
            Assert.Equal(40, Marshal.SizeOf(typeof(NativeMethods.SceneMember)), "sizeof(npc_scene_member)");
            Assert.Equal(48, Marshal.SizeOf(typeof(NativeMethods.SceneOptions)), "sizeof(npc_scene_options)");
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

        // ---- scenes: a 3-member table (brom, marta, lysander), the player "Ayla" ------------------
        // Random-weight model: the tests check who speaks and the events, never wording.

        static readonly string[] Trio = { "brom", "marta", "lysander" };
        static SayOptions Short { get { return new SayOptions { MaxNewTokens = 6, Seed = 5 }; } }
        static SayOptions Long { get { return new SayOptions { MaxNewTokens = 4000, Temperature = 1.0f, Seed = 3 }; } }

        static SceneConversation NewTrio(SteerNpcClient client, string what)
        {
            var scene = new SceneConversation(client, "mono-" + what + "-" + Guid.NewGuid().ToString("N").Substring(0, 8), "Ayla", 11,
                                              new Dictionary<string, string> { { "place", "The Rusty Tankard" } });
            scene.Create(Trio.Select(id => new NpcSceneMemberSpec(id)).ToList());
            return scene;
        }

        // Checks every event of a scene request on the way: the speaker on each delta and done,
        // the deltas adding up to the done, lines numbered in order, the scene's id.
        static NpcSceneRequest Watch(NpcSceneRequest r)
        {
            var text = new StringBuilder();
            string speaker = null;
            r.Delta += e =>
            {
                Assert.True(e.SpeakerId.Length > 0 && e.Speaker.Length > 0, "a delta names its speaker");
                Assert.Equal(r.SceneId, e.SceneId, "delta scene id");
                Assert.Equal(r.SceneId, e.SessionId, "session_id carries the scene");
                Assert.Equal(r.Lines.Count, e.Line, "delta line index");
                if (speaker != null) Assert.Equal(speaker, e.SpeakerId, "one speaker per line");
                speaker = e.SpeakerId;
                text.Append(e.Text);
            };
            r.LineDone += e =>
            {
                if (speaker != null) Assert.Equal(speaker, e.SpeakerId, "the done's speaker is the deltas'");
                Assert.Equal(text.ToString(), e.Text, "the deltas add up to the done");
                Assert.Equal(r.Lines.Count - 1, e.Line, "done line index");
                text.Length = 0;
                speaker = null;
            };
            r.Ended += e =>
            {
                Assert.True(speaker == null, "no line is left open at the end");
                Assert.Equal(r.Lines.Count, e.Line, "the end counts the lines");
            };
            return r;
        }

        static NpcSceneRequest Finish(SteerNpcClient client, NpcSceneRequest r, int timeoutMs = 120000)
        {
            PumpUntil(client, () => r.IsFinished, timeoutMs);
            return r;
        }

        static void ExpectEnded(NpcSceneRequest r, FinishReason finish = FinishReason.Stop)
        {
            Assert.Equal(NpcEventType.SceneEnd, r.Final.Type, "scene request ends with SceneEnd: " + r.Final.Text);
            Assert.Equal(finish, r.Final.FinishReason, "scene end finish reason");
        }

        static string Speakers(NpcSceneRequest r) { return string.Join(",", r.Lines.Select(l => l.SpeakerId)); }

        public static void TestSceneAddressing()
        {
            using (var client = NewClient())
            {
                SceneConversation scene = NewTrio(client, "address");
                NpcSceneInfo info = scene.Refresh();
                Assert.Equal("brom,marta,lysander", string.Join(",", info.Members.Select(m => m.MemberId)), "members");
                Assert.Equal("Brom Ironhand", info.Members[0].Name, "member name");
                Assert.Equal(11UL, info.Seed, "seed");
                Assert.Equal("Ayla", info.PlayerName, "player name");
                var started = new List<string>();
                scene.LineStarted += (id, name) => started.Add(id + "=" + name);

                NpcSceneRequest r = Finish(client, Watch(scene.Say("Brom, what do you think?", new string[0], Short)));
                ExpectEnded(r);
                Assert.Equal("brom", Speakers(r), "named in the text");
                Assert.Equal("Brom Ironhand", r.Lines[0].Speaker, "speaker name");
                Assert.True(r.Lines[0].FinishReason == FinishReason.Stop || r.Lines[0].FinishReason == FinishReason.Length, "line finish");
                r = Finish(client, Watch(scene.Say("And you two?", new[] { "lysander", "marta" }, Short)));
                ExpectEnded(r);
                Assert.Equal("lysander,marta", Speakers(r), "one line per addressed member, in order");
                r = Finish(client, Watch(scene.Say("Hm. Go on.", new string[0], Short)));
                Assert.Equal("marta", Speakers(r), "nobody addressed: the last speaker");
                Assert.Equal("brom=Brom Ironhand,lysander=Lysander Quill,marta=Marta Greenhollow,marta=Marta Greenhollow",
                             string.Join(",", started), "LineStarted per line");
                info = scene.Refresh(true);
                Assert.Equal("player,brom,player,lysander,marta,player,marta", string.Join(",", info.Transcript.Select(l => l.SpeakerId)), "transcript");
                Assert.Equal(7, info.Lines, "lines");

                NpcSceneRequest bad = Finish(client, scene.Say("Hello?", new[] { "nobody" }, Short));
                Assert.Equal(NpcEventType.Error, bad.Final.Type, "unknown member");
                Assert.Equal(StatusCodes.NotFound, bad.Final.StatusCode, "unknown member status");
                var e = Assert.Throws(() => client.GetScene("no-such-scene"), "unknown scene");
                Assert.Equal(StatusCodes.NotFound, e.StatusCode, "unknown scene status");
                scene.Delete();
                Assert.Equal(0, client.PendingReplies, "nothing pending");
            }
        }

        public static void TestSceneBanter()
        {
            using (var client = NewClient())
            {
                SceneConversation scene = NewTrio(client, "banter");
                Finish(client, scene.Say("Brom, tell Marta about the sword.", new string[0], Short));
                var syntax = Assert.Throws(() => scene.Continue(0, Short), "turns = 0");
                Assert.Equal(StatusCodes.InvalidArgument, syntax.StatusCode, "turns = 0 status");
                NpcSceneRequest r = Finish(client, Watch(scene.Continue(3, Short)));
                ExpectEnded(r);
                Assert.Equal(3, r.Lines.Count, "three banter lines");
                var order = new[] { "brom" }.Concat(r.Lines.Select(l => l.SpeakerId)).ToList();
                for (int i = 1; i < order.Count; i++) Assert.True(order[i] != order[i - 1], "never the member who spoke last: " + string.Join(",", order));
                Assert.Equal("marta", r.Lines[0].SpeakerId, "the member the player's line also named goes first");
                Assert.Equal(5, scene.Refresh().Lines, "2 + 3 lines");
                Console.WriteLine("    banter: {0}", Speakers(r));
            }
        }

        public static void TestSceneCancelMidBanter()
        {
            using (var client = NewClient())
            {
                SceneConversation scene = NewTrio(client, "cancel");
                NpcSceneRequest r = Watch(scene.Continue(5, Long));
                int deltas = 0;
                bool asked = false;
                r.Delta += e => { if (++deltas >= 3 && !asked) asked = scene.Cancel(); };
                Finish(client, r);
                Assert.True(asked, "Cancel() accepted");
                ExpectEnded(r, FinishReason.Cancelled);
                Assert.True(r.WasCancelled, "WasCancelled");
                Assert.True(r.Lines.Count >= 1 && r.Lines.Count < 5, "no line started after the cancel");
                Assert.Equal(FinishReason.Cancelled, r.Lines.Last().FinishReason, "the running line ends cancelled");
                Assert.True(!client.Cancel(r.Id), "cancelling a finished request is refused");
                NpcSceneInfo info = scene.Refresh(true);
                Assert.Equal(Speakers(r), string.Join(",", info.Transcript.Select(l => l.SpeakerId)), "the partial line was heard");

                // A new player line interrupts running banter, then answers.
                NpcSceneRequest banter = scene.Continue(5, Long);
                PumpUntil(client, () => banter.CurrentText.Length > 0 || banter.IsFinished);
                NpcSceneRequest said = scene.Say("Enough! Lysander, a word.", new string[0], Short);
                PumpUntil(client, () => banter.IsFinished && said.IsFinished, 120000);
                ExpectEnded(banter, FinishReason.Cancelled);
                Assert.Equal(1, banter.Lines.Count, "the banter stopped at its running line");
                ExpectEnded(said);
                Assert.Equal("lysander", Speakers(said), "the player's line is answered");
                Assert.Equal(0, client.PendingReplies, "nothing pending");
            }
        }

        public static void TestSceneJoinLeave()
        {
            using (var client = NewClient())
            {
                SceneConversation scene = NewTrio(client, "door");
                scene.Join(new NpcSceneMemberSpec("pip"));
                Assert.Equal("brom,marta,lysander,pip", string.Join(",", scene.Refresh().Members.Select(m => m.MemberId)), "pip joined");
                var twice = Assert.Throws(() => scene.Join(new NpcSceneMemberSpec("pip")), "joining twice");
                Assert.Equal(StatusCodes.AlreadyExists, twice.StatusCode, "joining twice status");
                var bad = Assert.Throws(() => scene.Join(new NpcSceneMemberSpec("pip", "pip2", null, "humor:9")), "bad vector");
                Assert.Equal(StatusCodes.InvalidArgument, bad.StatusCode, "bad vector status");
                Assert.True(bad.Message.Contains("humor = 9"), "names the field: " + bad.Message);
                scene.Leave("marta");
                Assert.Equal("brom,lysander,pip", string.Join(",", scene.Members), "local member list");
                Assert.Equal("brom,lysander,pip", string.Join(",", scene.Refresh().Members.Select(m => m.MemberId)), "marta left");
                var gone = Assert.Throws(() => scene.Leave("marta"), "leaving twice");
                Assert.Equal(StatusCodes.NotFound, gone.StatusCode, "leaving twice status");
                NpcSceneRequest r = Finish(client, scene.Say("Marta?", new[] { "marta" }, Short));
                Assert.Equal(StatusCodes.NotFound, r.Final.StatusCode, "a member who left");
                r = Finish(client, Watch(scene.Say("Pip, hello!", new string[0], Short)));
                Assert.Equal("pip", Speakers(r), "the new member answers");
                var steer = Assert.Throws(() => scene.Steer("brom", null, "humor:9"), "bad steer");
                Assert.True(steer.Message.Contains("member 'brom'"), "names the member: " + steer.Message);
            }
        }

        public static void TestSceneExportImport()
        {
            using (var client = NewClient())
            {
                SceneConversation scene = NewTrio(client, "save");
                scene.Steer("lysander", null, "humor:4");
                Finish(client, scene.Say("Evening!", new[] { "brom", "marta" }, Short));
                scene.Leave("marta");
                NpcSceneInfo before = scene.Refresh(true);
                byte[] data = scene.Export();
                Assert.True(data.Length > 0, "snapshot bytes");
                scene.Delete();
                Assert.Equal(StatusCodes.NotFound, Assert.Throws(() => client.GetScene(scene.SceneId), "deleted").StatusCode, "deleted status");
                var restored = new SceneConversation(client);
                restored.Import(data);
                Assert.Equal(scene.SceneId, restored.SceneId, "restored id");
                Assert.Equal("brom,lysander", string.Join(",", restored.Members), "members restored");
                NpcSceneInfo after = restored.Refresh(true);
                Assert.Equal(string.Join("|", before.Transcript.Select(l => l.ToString())), string.Join("|", after.Transcript.Select(l => l.ToString())), "transcript restored");
                Assert.Equal(4, after.Members.First(m => m.MemberId == "lysander").Attributes["humor"], "steer restored");
                Assert.True(restored.Export().SequenceEqual(data), "exports the same bytes");
                NpcSceneRequest r = Finish(client, Watch(restored.Say("Lysander?", new string[0], Short)));
                Assert.Equal("lysander", Speakers(r), "it goes on");
                Assert.Equal(4, AttributeString.Parse(r.Lines[0].Attributes)["humor"], "the line uses the kept steer");
                Console.WriteLine("    scene snapshot {0} bytes", data.Length);
            }
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
