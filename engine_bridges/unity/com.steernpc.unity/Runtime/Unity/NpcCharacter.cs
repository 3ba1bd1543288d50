// NpcCharacter: one NPC in the scene, talking through the SteerNpcManager's client.
// Set the character id, mood and attribute overrides in the Inspector; wire the UnityEvents to
// your dialogue UI; call Say(text) from gameplay code.
using System;
using System.Collections.Generic;
using UnityEngine;
using UnityEngine.Events;

namespace SteerNpc.Unity
{
    [Serializable]
    public struct NpcAttributeOverride
    {
        [Tooltip("An attribute of the character's schema, e.g. humor, friendliness, verbosity")]
        public string name;
        [Range(0, 4)] public int value;
    }

    [Serializable] public class NpcTextEvent : UnityEvent<string> { }

    /// <summary>(gRPC status code, message)</summary>
    [Serializable] public class NpcErrorEvent : UnityEvent<int, string> { }

    [AddComponentMenu("SteerNPC/NPC Character")]
    public sealed class NpcCharacter : MonoBehaviour
    {
        [Tooltip("The persona id on the server, e.g. brom")]
        [SerializeField] private string characterId = "brom";
        [Tooltip("One of the persona's moods; empty = none")]
        [SerializeField] private string mood = "";
        [Tooltip("Session-level steering, applied on start and whenever you change it in play mode")]
        [SerializeField] private List<NpcAttributeOverride> attributeOverrides = new List<NpcAttributeOverride>();
        [SerializeField] private string playerName = "";
        [Tooltip("0 = the persona's default")]
        [SerializeField] private int maxNewTokens;
        [Tooltip("Delete the server-side session when this object is destroyed (off: keep it for save games)")]
        [SerializeField] private bool deleteSessionOnDestroy;
        [Tooltip("Its id in an NpcScene; empty = the character id (two members of one character need two ids)")]
        [SerializeField] private string memberId = "";

        [Header("Events")]
        [Tooltip("Each streamed piece of the reply")]
        public NpcTextEvent onReplyDelta = new NpcTextEvent();
        [Tooltip("The whole reply, once done (also after a cancel)")]
        public NpcTextEvent onReply = new NpcTextEvent();
        public NpcErrorEvent onError = new NpcErrorEvent();
        public UnityEvent onSessionReady = new UnityEvent();

        private readonly Queue<KeyValuePair<string, string>> _waiting = new Queue<KeyValuePair<string, string>>();
        private NpcReply _current;
        private string _appliedSteer;

        public string CharacterId { get { return characterId; } }
        public string Mood { get { return mood; } }
        /// <summary>Its member id in an NpcScene.</summary>
        public string MemberId { get { return string.IsNullOrEmpty(memberId) ? characterId : memberId; } }
        /// <summary>The NpcScene it talks in, if any: then it opens no session of its own, and the
        /// scene's lines spoken by it arrive on onReplyDelta / onReply.</summary>
        public NpcScene Scene { get; internal set; }
        public string SessionId { get; private set; }
        public bool IsReady { get { return SessionId != null; } }
        public bool IsSpeaking { get { return _current != null && !_current.IsFinished; } }
        /// <summary>The reply being streamed (or the last one).</summary>
        public NpcReply CurrentReply { get { return _current; } }

        private static SteerNpcManager Manager { get { return SteerNpcManager.GetOrCreate(); } }

        private void Start()
        {
            if (Scene == null) StartSession(null);  // a scene member talks through its NpcScene
        }

        /// <summary>What joins a scene for this character: its id, mood and Inspector steering.</summary>
        public NpcSceneMemberSpec SceneMemberSpec()
        {
            return new NpcSceneMemberSpec(characterId, MemberId, string.IsNullOrEmpty(mood) ? null : mood,
                                          AttributeString.Format(OverridesAsDictionary()));
        }

        // A scene line of this member (called by NpcScene on the main thread).
        internal void RaiseSceneDelta(string text) { onReplyDelta.Invoke(text); }
        internal void RaiseSceneLine(string text) { onReply.Invoke(text); }
        internal void RaiseSceneError(int code, string message) { onError.Invoke(code, message); }

        /// <summary>Open a session (or restore a save-game snapshot) on a worker thread.</summary>
        public void StartSession(byte[] snapshot)
        {
            string steer = AttributeString.Format(OverridesAsDictionary());
            string moodArg = string.IsNullOrEmpty(mood) ? null : mood;
            string player = string.IsNullOrEmpty(playerName) ? null : playerName;
            string id = characterId;
            Manager.RunInBackground(
                client => snapshot != null ? client.ImportSession(snapshot) : client.CreateSession(id, moodArg, steer, player),
                sessionId =>
                {
                    SessionId = sessionId;
                    _appliedSteer = SteerKey();
                    onSessionReady.Invoke();
                    while (_waiting.Count > 0)
                    {
                        var line = _waiting.Dequeue();
                        Say(line.Key, line.Value);
                    }
                },
                ReportException);
        }

        /// <summary>The player says something; the reply streams into onReplyDelta / onReply.
        /// perReplyOverrides ("humor:4") apply to this reply only. Lines said before the session
        /// is ready are queued. A reply still streaming is cancelled first.</summary>
        public NpcReply Say(string text, string perReplyOverrides = null)
        {
            if (!IsReady)
            {
                _waiting.Enqueue(new KeyValuePair<string, string>(text, perReplyOverrides));
                return null;
            }
            if (IsSpeaking) _current.Cancel();
            try
            {
                _current = Manager.Client.Say(SessionId, text, new SayOptions { Attributes = perReplyOverrides, MaxNewTokens = maxNewTokens });
            }
            catch (SteerNpcException e)
            {
                onError.Invoke(e.StatusCode, e.Message);
                return null;
            }
            _current.Delta += e => onReplyDelta.Invoke(e.Text);
            _current.Done += e => onReply.Invoke(e.Text);
            _current.Error += e => onError.Invoke(e.StatusCode, e.Text);
            return _current;
        }

        /// <summary>Stop the reply being streamed (it ends with onReply and FinishReason.Cancelled).</summary>
        public void Cancel()
        {
            if (IsSpeaking) _current.Cancel();
        }

        /// <summary>Change the mood for the rest of the conversation.</summary>
        public void SetMood(string newMood)
        {
            mood = newMood ?? "";
            PushSteer();
        }

        /// <summary>Set one attribute for the rest of the conversation.</summary>
        public void SetAttribute(string attribute, int value)
        {
            int i = attributeOverrides.FindIndex(o => o.name == attribute);
            var item = new NpcAttributeOverride { name = attribute, value = value };
            if (i >= 0) attributeOverrides[i] = item; else attributeOverrides.Add(item);
            PushSteer();
        }

        /// <summary>A save-game snapshot of the conversation (blocking; call it at save time).</summary>
        public byte[] ExportSession()
        {
            return IsReady ? Manager.Client.ExportSession(SessionId) : null;
        }

        private void OnValidate()
        {
            // Inspector edits in play mode steer the live session.
            if (Application.isPlaying && IsReady && SteerKey() != _appliedSteer) PushSteer();
        }

        private void OnDestroy()
        {
            if (IsSpeaking) _current.Cancel();
            SteerNpcManager manager = SteerNpcManager.Instance;
            if (deleteSessionOnDestroy && IsReady && manager != null && manager.Client != null)
            {
                string id = SessionId;
                manager.RunInBackground(client => { client.DeleteSession(id); return true; }, null);
            }
        }

        private void PushSteer()
        {
            if (!IsReady) return;
            string id = SessionId;
            string moodArg = mood;
            string steer = AttributeString.Format(OverridesAsDictionary());
            _appliedSteer = SteerKey();
            // clear = true: the Inspector state is the whole truth about this session's steering.
            Manager.RunInBackground(client => { client.Steer(id, moodArg, steer, true); return true; }, null, ReportException);
        }

        private Dictionary<string, int> OverridesAsDictionary()
        {
            var d = new Dictionary<string, int>();
            foreach (NpcAttributeOverride o in attributeOverrides)
                if (!string.IsNullOrEmpty(o.name)) d[o.name.Trim()] = o.value;
            return d;
        }

        private string SteerKey()
        {
            return mood + "|" + AttributeString.Format(OverridesAsDictionary());
        }

        private void ReportException(Exception e)
        {
            var s = e as SteerNpcException;
            onError.Invoke(s != null ? s.StatusCode : StatusCodes.Internal, e.Message);
        }
    }
}
