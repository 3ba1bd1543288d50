// SteerNpcManager: one SteerNpcClient for the scene (or the game), pumped once per frame.
// Thin Unity layer: all protocol work lives in Runtime/Core (engine-agnostic).
using System;
using System.Collections.Generic;
using System.Threading;
using UnityEngine;

namespace SteerNpc.Unity
{
    [DefaultExecutionOrder(-100)]
    [DisallowMultipleComponent]
    [AddComponentMenu("SteerNPC/SteerNPC Manager")]
    public sealed class SteerNpcManager : MonoBehaviour
    {
        [Header("Server")]
        [Tooltip("host:port of `steernpc serve`")]
        [SerializeField] private string target = "127.0.0.1:50051";
        [Tooltip("Sent as 'authorization: Bearer KEY'. Do not ship a secret key inside a game build.")]
        [SerializeField] private string apiKey = "";
        [SerializeField] private bool useTls;
        [Tooltip("PEM root certificates for TLS; empty = the system roots")]
        [SerializeField, TextArea(2, 6)] private string rootCertificatesPem = "";
        [Tooltip("Deadline of blocking calls (session create, steer, ...), ms")]
        [SerializeField] private int defaultDeadlineMs = 10000;

        [Header("Behaviour")]
        [SerializeField] private bool dontDestroyOnLoad = true;
        [Tooltip("At most this many reply events are raised per frame")]
        [SerializeField] private int maxEventsPerFrame = 256;
        [SerializeField] private bool logErrors = true;

        private readonly Queue<Action> _mainThread = new Queue<Action>();

        /// <summary>The manager of the running game (the first one that woke up).</summary>
        public static SteerNpcManager Instance { get; private set; }

        /// <summary>The client; null before Awake and after OnDestroy.</summary>
        public SteerNpcClient Client { get; private set; }

        public string Target { get { return target; } }

        private void Awake()
        {
            if (Instance != null && Instance != this)
            {
                Destroy(gameObject);
                return;
            }
            Instance = this;
            if (dontDestroyOnLoad) DontDestroyOnLoad(gameObject);
            try
            {
                Client = new SteerNpcClient(new SteerNpcClientOptions
                {
                    Target = target,
                    ApiKey = string.IsNullOrEmpty(apiKey) ? null : apiKey,
                    UseTls = useTls,
                    RootCertificatesPem = string.IsNullOrEmpty(rootCertificatesPem) ? null : rootCertificatesPem,
                    DefaultDeadlineMs = defaultDeadlineMs,
                });
                if (logErrors) Client.ReplyError += e => Debug.LogWarningFormat("[SteerNPC] reply {0} failed ({1}): {2}", e.RequestId, e.StatusCode, e.Text);
            }
            catch (DllNotFoundException e)
            {
                Debug.LogErrorFormat("[SteerNPC] the native library is missing for this platform ({0}); see Packages/com.steernpc.unity/Plugins/README.md", e.Message);
                enabled = false;
            }
        }

        private void Update()
        {
            if (Client == null) return;
            Client.Poll(maxEventsPerFrame);  // raises reply events here, on the main thread
            while (true)
            {
                Action action;
                lock (_mainThread)
                {
                    if (_mainThread.Count == 0) break;
                    action = _mainThread.Dequeue();
                }
                action();
            }
        }

        private void OnDestroy()
        {
            if (Instance != this) return;
            Instance = null;
            if (Client != null) Client.Dispose();  // cancels replies in flight
            Client = null;
        }

        /// <summary>Run a blocking client call on a worker thread; the result (or the exception)
        /// is delivered on the main thread in a later Update.</summary>
        public void RunInBackground<T>(Func<SteerNpcClient, T> work, Action<T> onResult, Action<Exception> onError = null)
        {
            SteerNpcClient client = Client;
            if (client == null)
            {
                if (onError != null) onError(new InvalidOperationException("SteerNpcManager has no client"));
                return;
            }
            ThreadPool.QueueUserWorkItem(delegate
            {
                try
                {
                    T result = work(client);
                    Post(delegate { if (onResult != null) onResult(result); });
                }
                catch (Exception e)
                {
                    if (logErrors) Post(delegate { Debug.LogWarning("[SteerNPC] " + e.Message); });
                    if (onError != null) Post(delegate { onError(e); });
                }
            });
        }

        /// <summary>Queue an action for the main thread (next Update).</summary>
        public void Post(Action action)
        {
            lock (_mainThread) _mainThread.Enqueue(action);
        }

        /// <summary>The scene's manager, creating one with default settings if there is none.</summary>
        public static SteerNpcManager GetOrCreate()
        {
            if (Instance != null) return Instance;
            var existing = FindObjectOfType<SteerNpcManager>();
            if (existing != null) return existing;
            return new GameObject("SteerNPC Manager").AddComponent<SteerNpcManager>();
        }
    }
}
